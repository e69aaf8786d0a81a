//! Fuzzes every SNMP decoder (message, PDU, scopedPDU, OID, AES-CFB + scopedPDU, HMAC check).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    drivers::pdu::fuzz_decode(data);
});
