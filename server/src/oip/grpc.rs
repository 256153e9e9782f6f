//! The Open Inference Protocol's gRPC service (`--grpc-port`), `inference.GRPCInferenceService`
//! as Triton publishes it (crate `oip-grpc`): ServerLive, ServerReady, ModelReady,
//! ServerMetadata, ModelMetadata, ModelConfig, ModelInfer and ModelStatistics; the others
//! (repository, shared memory, tracing, streaming) answer UNIMPLEMENTED. A BYTES input comes
//! as `raw_input_contents` (each element a little-endian u32 length and its bytes, as
//! tritonclient sends it) or as typed `bytes_contents`; outputs go back as
//! `raw_output_contents`, as Triton answers.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::StatusCode;
use oip_grpc::inference as pb;
use pb::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use pb::infer_parameter::ParameterChoice;
use tonic::{Request, Response, Status};

use super::wire::{self, Elements, OutputWanted};
use super::{InputSpec, Oip, Problem, EXTENSIONS, INPUT, MAX_BATCH, OUTPUT, PLATFORM, VERSION};

impl From<Problem> for Status {
    fn from(p: Problem) -> Status {
        match p.status {
            StatusCode::BAD_REQUEST => Status::invalid_argument(p.message),
            StatusCode::NOT_FOUND => Status::not_found(p.message),
            StatusCode::SERVICE_UNAVAILABLE => Status::unavailable(p.message),
            StatusCode::GATEWAY_TIMEOUT => Status::deadline_exceeded(p.message),
            _ => Status::internal(p.message),
        }
    }
}

struct Service {
    oip: Arc<Oip>,
}

fn tensor(
    name: &str,
    datatype: &str,
    shape: Vec<i64>,
) -> pb::model_metadata_response::TensorMetadata {
    pb::model_metadata_response::TensorMetadata {
        name: name.into(),
        datatype: datatype.into(),
        shape,
    }
}

fn duration((count, ns): (u64, u64)) -> Option<pb::StatisticDuration> {
    Some(pb::StatisticDuration { count, ns })
}

/// A requested output's parameter as a count (`classification`), or a flag (`binary_data`,
/// which gRPC ignores: its outputs are always raw bytes).
fn count(
    params: &HashMap<String, pb::InferParameter>,
    key: &str,
) -> Result<Option<usize>, Problem> {
    match params.get(key).and_then(|p| p.parameter_choice.as_ref()) {
        None => Ok(None),
        Some(ParameterChoice::Int64Param(k)) if *k > 0 => Ok(usize::try_from(*k).ok()),
        Some(ParameterChoice::Uint64Param(k)) if *k > 0 => Ok(usize::try_from(*k).ok()),
        Some(other) => Err(Problem::bad(format!(
            "parameter {key} = {other:?} is not a positive count"
        ))),
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for Service {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        Ok(Response::new(pb::ServerReadyResponse {
            ready: self.oip.ready(),
        }))
    }

    async fn model_ready(
        &self,
        r: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let r = r.into_inner();
        self.oip.model(&r.name, Some(&r.version))?;
        Ok(Response::new(pb::ModelReadyResponse {
            ready: self.oip.ready(),
        }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: PLATFORM.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        r: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let r = r.into_inner();
        let input = InputSpec::of(&self.oip.model(&r.name, Some(&r.version))?.takes);
        Ok(Response::new(pb::ModelMetadataResponse {
            name: r.name,
            versions: vec![VERSION.into()],
            platform: PLATFORM.into(),
            inputs: vec![tensor(INPUT, input.datatype, input.shape())],
            outputs: vec![tensor(OUTPUT, "FP32", vec![-1, -1])],
        }))
    }

    async fn model_config(
        &self,
        r: Request<pb::ModelConfigRequest>,
    ) -> Result<Response<pb::ModelConfigResponse>, Status> {
        let r = r.into_inner();
        let input = InputSpec::of(&self.oip.model(&r.name, Some(&r.version))?.takes);
        // The HTTP configuration's type name is the enum's name in the .proto.
        let data_type = pb::DataType::from_str_name(input.config_type).ok_or_else(|| {
            Status::internal(format!(
                "no data type `{}` in the .proto",
                input.config_type
            ))
        })?;
        let config = pb::ModelConfig {
            name: r.name,
            platform: PLATFORM.into(),
            backend: PLATFORM.into(),
            max_batch_size: MAX_BATCH as i32,
            input: vec![pb::ModelInput {
                name: INPUT.into(),
                data_type: data_type as i32,
                dims: input.dims,
                ..Default::default()
            }],
            output: vec![pb::ModelOutput {
                name: OUTPUT.into(),
                data_type: pb::DataType::TypeFp32 as i32,
                dims: vec![-1],
                ..Default::default()
            }],
            scheduling_choice: Some(pb::model_config::SchedulingChoice::DynamicBatching(
                pb::ModelDynamicBatching::default(),
            )),
            ..Default::default()
        };
        Ok(Response::new(pb::ModelConfigResponse {
            config: Some(config),
        }))
    }

    async fn model_statistics(
        &self,
        r: Request<pb::ModelStatisticsRequest>,
    ) -> Result<Response<pb::ModelStatisticsResponse>, Status> {
        let r = r.into_inner();
        let only = if r.name.is_empty() {
            None
        } else {
            self.oip.model(&r.name, Some(&r.version))?;
            Some(r.name.as_str())
        };
        let model_stats = self
            .oip
            .stats(only)
            .iter()
            .map(|s| pb::ModelStatistics {
                name: s.name.into(),
                version: VERSION.into(),
                last_inference: s.last_ms,
                inference_count: s.inferences,
                execution_count: s.executions,
                inference_stats: Some(pb::InferStatistics {
                    success: duration(s.success),
                    fail: duration(s.fail),
                    queue: duration(s.queue),
                    compute_input: duration((s.queue.0, 0)),
                    compute_infer: duration(s.compute_infer),
                    compute_output: duration((s.queue.0, 0)),
                    cache_hit: duration((0, 0)),
                    cache_miss: duration((0, 0)),
                }),
                ..Default::default()
            })
            .collect();
        Ok(Response::new(pb::ModelStatisticsResponse { model_stats }))
    }

    async fn model_infer(
        &self,
        r: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let mut r = r.into_inner();
        let found = self.oip.model(&r.model_name, Some(&r.model_version))?;
        if r.inputs.len() != 1 {
            return Err(Problem::bad(format!(
                "one input, `{INPUT}`; the request has {}",
                r.inputs.len()
            ))
            .into());
        }
        let input = r.inputs.remove(0);
        let shape = wire::dims(&input.shape, &input.name).map_err(Problem::from)?;
        let elements_count = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| {
                Problem::bad(format!("input `{}`: shape {shape:?} overflows", input.name))
            })?;
        let elements = match (r.raw_input_contents.len(), input.contents) {
            (0, Some(c)) => typed(c, &input.datatype, elements_count, &input.name)?,
            (1, None) => wire::binary_elements(
                &r.raw_input_contents[0],
                &input.datatype,
                elements_count,
                &input.name,
            )
            .map_err(Problem::from)?,
            (0, None) => {
                return Err(Problem::bad(format!("input `{}` has no data", input.name)).into())
            }
            (raw, _) => {
                return Err(Problem::bad(format!(
                    "one input's data, in raw_input_contents or contents; got {raw} raw \
                     entries{}",
                    if raw == 1 { " and contents" } else { "" }
                ))
                .into())
            }
        };
        let wanted = if r.outputs.is_empty() {
            vec![OutputWanted {
                name: OUTPUT.into(),
                binary: true,
                classification: None,
            }]
        } else {
            r.outputs
                .iter()
                .map(|o| {
                    Ok(OutputWanted {
                        name: o.name.clone(),
                        binary: true,
                        classification: count(&o.parameters, "classification")?,
                    })
                })
                .collect::<Result<Vec<_>, Problem>>()?
        };
        let outputs = self
            .oip
            .infer(
                found,
                (&input.name, &input.datatype, &shape),
                elements,
                wanted,
            )
            .await?;
        let mut response = pb::ModelInferResponse {
            model_name: r.model_name,
            model_version: VERSION.into(),
            id: r.id,
            ..Default::default()
        };
        for o in outputs {
            response
                .outputs
                .push(pb::model_infer_response::InferOutputTensor {
                    name: o.name.clone(),
                    datatype: o.data.datatype().into(),
                    shape: o.shape.iter().map(|&d| d as i64).collect(),
                    ..Default::default()
                });
            response.raw_output_contents.push(o.data.raw());
        }
        Ok(Response::new(response))
    }
}

/// An input's typed contents: BYTES in `bytes_contents`, UINT8 in `uint_contents`, FP32 in
/// `fp32_contents`, `count` of them.
fn typed(
    c: pb::InferTensorContents,
    datatype: &str,
    count: usize,
    name: &str,
) -> Result<Elements, Problem> {
    let (got, elements) = match datatype {
        "BYTES" => (c.bytes_contents.len(), Elements::Bytes(c.bytes_contents)),
        "UINT8" => {
            let n = c.uint_contents.len();
            let pixels = c
                .uint_contents
                .into_iter()
                .map(u8::try_from)
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|_| {
                    Problem::bad(format!(
                        "input `{name}`: UINT8 contents hold a value above 255"
                    ))
                })?;
            (n, Elements::U8(pixels))
        }
        "FP32" => (c.fp32_contents.len(), Elements::F32(c.fp32_contents)),
        other => return Err(wire::unknown_datatype(other, name).into()),
    };
    if got != count {
        return Err(Problem::bad(format!(
            "input `{name}`: {got} {datatype} contents, the shape says {count}"
        )));
    }
    Ok(elements)
}

/// Serves the service on `listener` until `stop` turns true (then the calls in progress are
/// answered). Messages above `max_message` bytes are refused.
pub async fn serve(
    listener: tokio::net::TcpListener,
    oip: Arc<Oip>,
    max_message: usize,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let service = GrpcInferenceServiceServer::new(Service { oip })
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    // Without TCP_NODELAY a reply's last frame waits for the client's delayed ACK: 20 ms more
    // a call (perf_analyzer at 2 clients on the development machine: p50 101.7 ms against HTTP's
    // 80.2 on the same server).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let served = tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stop.wait_for(|&s| s).await;
        })
        .await;
    if let Err(e) = served {
        tracing::error!("gRPC endpoint stopped: {e}");
    }
}
