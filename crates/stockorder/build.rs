//! Generates the gRPC server code from the workspace's `proto/stock_order.proto` (the one file
//! both this crate and `stockorder-tools` compile) with `protox`, a protobuf compiler
//! written in Rust, so a fresh machine needs no `protoc`. The compiled descriptor set is also
//! written to `OUT_DIR` and embedded in the binary, which is what gRPC server reflection serves:
//! `grpcurl list` works without a copy of the proto on the client side.

use std::path::PathBuf;

use prost::Message;

/// The API's one definition, at the workspace root.
const PROTO_DIR: &str = "../../proto";
const PROTO: &str = "../../proto/stock_order.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO}");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // Imports (google/protobuf/timestamp.proto) are included, so reflection can resolve them.
    let descriptors = protox::compile([PROTO], [PROTO_DIR])?;
    std::fs::write(out_dir.join("stockorder_descriptor.bin"), descriptors.encode_to_vec())?;
    tonic_prost_build::configure()
        // The client too: the black-box tests call the server through it.
        .build_client(true)
        .build_server(true)
        // prost's codec, but a request that does not decode is INVALID_ARGUMENT (see the module).
        .codec_path("crate::adapter::inbound::grpc::StrictCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
