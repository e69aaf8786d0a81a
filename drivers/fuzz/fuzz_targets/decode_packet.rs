//! Fuzzes every IPMI decoder (datagram, session, message and command bodies) with one input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    drivers::ipmi::fuzzing::decode_everything(data);
});
