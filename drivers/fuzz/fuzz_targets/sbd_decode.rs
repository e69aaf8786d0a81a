//! Fuzzes every SBD decoder (header, node entry, mailbox, whole slot table).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    drivers::sbd::fuzz_decode(data);
});
