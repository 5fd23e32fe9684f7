#![no_main]
//! See `streamdb::fuzzing::offsets_and_params`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| streamdb::fuzzing::offsets_and_params(data));
