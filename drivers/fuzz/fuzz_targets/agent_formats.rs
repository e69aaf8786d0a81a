//! Fuzzes the fence agent API text parsers (stdin options, metadata XML, list output, stderr
//! scrubbing) with one input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    drivers::agent::format::fuzz_all(data);
});
