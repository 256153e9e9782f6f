//! The Open Inference Protocol's gRPC service, `inference.GRPCInferenceService`, from the
//! `.proto` Triton publishes (proto/README.md says where it comes from and under which
//! licence): its messages, and the trait a server implements with the tonic service that
//! serves it. Triton's clients (`tritonclient[grpc]`, `perf_analyzer -i grpc`) call it.

/// The generated messages and `grpc_inference_service_server`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod inference {
    tonic::include_proto!("inference");
}
