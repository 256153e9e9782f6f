//! Compiles proto/grpc_service.proto (with model_config.proto) to Rust: the messages and the
//! server side of `inference.GRPCInferenceService`. protox parses the files, so no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["grpc_service.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        // The RPCs we do not serve (repository, shared memory, tracing) answer UNIMPLEMENTED.
        .generate_default_stubs(true)
        .compile_fds(fds)?;
    Ok(())
}
