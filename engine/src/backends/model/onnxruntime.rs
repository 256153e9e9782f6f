//! The ONNX Runtime CPU engine (`cpu_engine = "onnxruntime"`), through the `ort` crate with its
//! library loaded at run time: from the node's `onnxruntime` key, `ORT_DYLIB_PATH`, the system's
//! `libonnxruntime.so`, or the `onnxruntime` Python wheel, the first that loads, once per
//! process. Each instance owns a session (`Session::run` takes it mutably), its intra-op threads
//! the machine's cores shared between the node's instances.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::{Tensor as OrtTensor, ValueType};

use super::{InstanceSpec, ModelEngine, ModelError, ModelInstance};
use crate::item::Tensor;

/// The ONNX Runtime library this process loaded, and its environment.
pub struct Runtime {
    pub path: PathBuf,
    /// ONNX Runtime's own build line (version, commit).
    pub info: String,
    env: ort::environment::Environment,
}

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// Where the `onnxruntime` wheel of `python3` keeps its library, if it has one.
fn wheel_library() -> Option<PathBuf> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), 'capi'))",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let dir = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so"))
        })
}

/// Loads ONNX Runtime (once per process): `asked` (the node's `onnxruntime` key) alone when
/// given; else `ORT_DYLIB_PATH`, the system's `libonnxruntime.so`, the Python wheel's. The
/// error lists every place tried and why each failed.
pub fn runtime(asked: Option<&Path>) -> Result<&'static Runtime, String> {
    let loaded = RUNTIME.get_or_init(|| {
        let mut tried: Vec<PathBuf> = Vec::new();
        match asked {
            Some(p) => tried.push(p.to_path_buf()),
            None => {
                tried.extend(std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from));
                tried.push(PathBuf::from("libonnxruntime.so"));
                tried.extend(wheel_library());
            }
        }
        let mut errors = Vec::new();
        for path in tried {
            let env = ort::init_from(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    b.with_name("torchpipe-rs")
                        .build()
                        .map_err(|e| e.to_string())
                });
            match env {
                Ok(env) => {
                    let info = ort::info().to_string();
                    return Ok(Runtime { path, info, env });
                }
                Err(e) => errors.push(format!("{}: {e}", path.display())),
            }
        }
        Err(errors.join("; "))
    });
    let rt = loaded.as_ref().map_err(Clone::clone)?;
    match asked {
        Some(p) if p != rt.path => Err(format!(
            "this process already loaded ONNX Runtime from {}; one library serves every node",
            rt.path.display()
        )),
        _ => Ok(rt),
    }
}

fn ort_error(e: impl std::fmt::Display) -> ModelError {
    ModelError::Onnxruntime(e.to_string())
}

pub struct OrtModel {
    runtime: &'static Runtime,
    path: PathBuf,
    item_shape: Vec<usize>,
    threads: usize,
    description: String,
    /// The session `load` opened to read the input, handed to the first instance rather than
    /// loading the model again.
    first: Mutex<Option<Session>>,
}

impl OrtModel {
    /// Reads `path`'s input shape with a first session; `threads` is each instance's intra-op
    /// thread count.
    pub fn load(
        path: &Path,
        runtime: &'static Runtime,
        threads: usize,
    ) -> Result<OrtModel, ModelError> {
        // Read once by the front-end both engines share, so that a file that is no ONNX, or
        // external data missing or cut short, is said the same way whichever engine runs it.
        drop(onnx_front::read(path, &mut |_| {})?);
        let session = session(runtime, path, threads)?;
        let [input] = session.inputs() else {
            return Err(ModelError::InputCount(session.inputs().len()));
        };
        let item_shape: Option<Vec<usize>> = match input.dtype() {
            ValueType::Tensor { shape, .. } => shape
                .iter()
                .skip(1)
                .map(|&d| usize::try_from(d).ok().filter(|&d| d > 0))
                .collect(),
            _ => None,
        };
        let item_shape = match item_shape {
            Some(d) if !d.is_empty() => d,
            _ => return Err(ModelError::InputShape(format!("{:?}", input.dtype()))),
        };
        let version = runtime
            .info
            .split(|c: char| c == ',' || c.is_whitespace())
            .find_map(|w| w.strip_prefix("git-branch=rel-"))
            .unwrap_or("?");
        let description = format!(
            "CPU engine (ONNX Runtime {version} from {}, {threads} threads an instance), fp32, \
             input [N, {}]",
            runtime.path.display(),
            super::shape_text(&item_shape)
        );
        Ok(OrtModel {
            runtime,
            path: path.to_path_buf(),
            item_shape,
            threads,
            description,
            first: Mutex::new(Some(session)),
        })
    }
}

fn session(runtime: &Runtime, path: &Path, threads: usize) -> Result<Session, ModelError> {
    Session::builder(&runtime.env)
        .map_err(ort_error)?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(ort_error)?
        .with_intra_threads(threads)
        .map_err(ort_error)?
        .commit_from_file(path)
        .map_err(ort_error)
}

impl ModelEngine for OrtModel {
    fn item_shape(&self) -> &[usize] {
        &self.item_shape
    }

    fn describe(&self) -> String {
        self.description.clone()
    }

    fn instance(
        self: Arc<Self>,
        spec: &InstanceSpec,
    ) -> Result<Box<dyn ModelInstance>, ModelError> {
        let first = crate::sync::lock(&self.first).take();
        let session = match first {
            Some(s) => s,
            None => session(self.runtime, &self.path, self.threads)?,
        };
        Ok(Box::new(OrtInstance {
            session,
            norm: super::Normalisation::new(&self.item_shape, spec),
        }))
    }
}

struct OrtInstance {
    session: Session,
    norm: super::Normalisation,
}

impl ModelInstance for OrtInstance {
    fn run(&mut self, mut batch: Tensor) -> Result<Tensor, ModelError> {
        self.norm.apply(&mut batch.data);
        let n = batch.shape[0];
        let input = OrtTensor::from_array((batch.shape, batch.data)).map_err(ort_error)?;
        let outputs = self.session.run(ort::inputs![input]).map_err(ort_error)?;
        let (_, data) = outputs[0].try_extract_tensor::<f32>().map_err(ort_error)?;
        if n == 0 || !data.len().is_multiple_of(n) {
            return Err(ModelError::OutputSize {
                values: data.len(),
                batch: n,
            });
        }
        Ok(Tensor::new(vec![n, data.len() / n], data.to_vec()))
    }
}
