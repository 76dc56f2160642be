//! Generates the tonic client and server from `proto/bench.proto` (needs `protoc`: set
//! `PROTOC`, or have it on `PATH`, e.g. Debian's `protobuf-compiler`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::compile_protos("proto/bench.proto")?;
    Ok(())
}
