#![no_main]
//! See `streamdb::fuzzing::prepared_handle`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| streamdb::fuzzing::prepared_handle(data));
