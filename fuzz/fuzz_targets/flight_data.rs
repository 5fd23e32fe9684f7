#![no_main]
//! See `streamdb::fuzzing::flight_data`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| streamdb::fuzzing::flight_data(data));
