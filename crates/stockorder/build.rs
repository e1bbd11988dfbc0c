//! Generates the gRPC code from `proto/stock_order.proto` with `protox`, a protobuf compiler
//! written in Rust, so a fresh machine needs no `protoc`. The compiled descriptor set is also
//! written to `OUT_DIR` and embedded in the binary, which is what gRPC server reflection serves:
//! `grpcurl list` works without a copy of the proto on the client side.

use std::path::PathBuf;

use prost::Message;

const PROTO: &str = "proto/stock_order.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO}");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // Imports (google/protobuf/timestamp.proto) are included, so reflection can resolve them.
    let descriptors = protox::compile([PROTO], ["proto"])?;
    std::fs::write(out_dir.join("stockorder_descriptor.bin"), descriptors.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // prost's codec, but a request that does not decode is INVALID_ARGUMENT (see the module).
        .codec_path("crate::adapter::grpc::StrictCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
