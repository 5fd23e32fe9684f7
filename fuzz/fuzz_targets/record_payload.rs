#![no_main]
//! See `streamdb::fuzzing::record_payload`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| streamdb::fuzzing::record_payload(data));
