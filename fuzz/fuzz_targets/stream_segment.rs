#![no_main]
//! See `streamdb::fuzzing::stream_segment`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| streamdb::fuzzing::stream_segment(data));
