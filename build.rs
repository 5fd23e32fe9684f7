//! Compiles the gRPC service definitions in `proto/` into a descriptor set
//! for server reflection (so `grpcurl list` and `describe` work). Pure Rust
//! (protox): no `protoc` needed.

use std::path::PathBuf;

use prost::Message;

fn main() {
    let files = [
        "proto/Flight.proto",
        "proto/FlightSql.proto",
        "proto/streamdb.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let set = protox::compile(files, ["proto"]).unwrap_or_else(|e| panic!("compiling proto/: {e}"));
    let out =
        PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("streamdb_descriptor.bin");
    std::fs::write(&out, set.encode_to_vec())
        .unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}
