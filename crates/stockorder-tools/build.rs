//! Generates the gRPC client from the workspace's `proto/stock_order.proto` with `protox` (no
//! `protoc` needed): the same file the service compiles its server from, and none of its code.

const PROTO_DIR: &str = "../../proto";
const PROTO: &str = "../../proto/stock_order.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO}");
    let descriptors = protox::compile([PROTO], [PROTO_DIR])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(descriptors)?;
    Ok(())
}
