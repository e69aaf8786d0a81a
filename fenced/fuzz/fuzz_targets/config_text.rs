//! Fuzzes fenced::fuzzing::config_text (see that function for what it covers).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fenced::fuzzing::config_text(data);
});
