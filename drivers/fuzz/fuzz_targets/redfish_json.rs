//! Fuzzes the decoding of every Redfish resource the fencing path reads.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    drivers::redfish::model::fuzz_decode(data);
});
