#![no_main]
//! See `streamdb::fuzzing::json_points`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| streamdb::fuzzing::json_points(data));
