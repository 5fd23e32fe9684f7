#![no_main]
//! See `streamdb::fuzzing::flight_data`.
//!
//! The server contains panics of the Arrow IPC decoder and answers them as
//! invalid data (`flight/ipc.rs`); the default panic hook replaces
//! libFuzzer's aborting one so that the harness behaves the same. A panic
//! that escapes (anywhere else) still aborts and is reported.

libfuzzer_sys::fuzz_target!(
    init: {
        let _ = std::panic::take_hook();
    },
    |data: &[u8]| streamdb::fuzzing::flight_data(data)
);
