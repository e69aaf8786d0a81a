//! Fuzzes the drill's record decoder and heartbeat parser (round trips checked).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hw_tests::drill::fuzz_decode(data);
});
