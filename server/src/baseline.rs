//! `server --baseline` (docs/architecture.md#the-baseline): the naive service users are leaving. Each request decodes,
//! resizes, converts and normalises its own image in its handler thread, then takes one global
//! lock around a batch-1 forward of a single model instance. Built from the same TOML, the same
//! kernels and the same model engine as the pipeline, so the comparison isolates scheduling.

use parking_lot::Mutex;

use anyhow::{bail, Context};
use engine::backend::Settings;
use engine::backends::image::{CvtColorMatSettings, DecodeMatSettings, ResizeMatSettings};
use engine::config::NodeConfig;
use engine::image;
use engine::{Backend, Config, Item, Pipeline, Registry, Tensor, Value};

/// One preprocessing step, read off the TOML's nodes in pipeline order.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Decode { max_pixels: usize },
    Resize { h: usize, w: usize },
    Color { rgb: bool },
    ToTensor,
}

pub struct Baseline {
    /// The entry node the chain starts at.
    entry: NodeConfig,
    steps: Vec<Step>,
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    model: Mutex<Box<dyn Backend>>,
}

/// The backend names an expression runs, composites flattened (`SyncTensor[Sequential[A,B]]` →
/// A, B).
fn leaves<'a>(e: &'a engine::backend::Expr, out: &mut Vec<&'a str>) {
    match e.name.as_str() {
        "Sequential" | "SyncTensor" | "Torch" => e.args.iter().for_each(|a| leaves(a, out)),
        name => out.push(name),
    }
}

impl Baseline {
    pub fn from_config(config: &Config, registry: &Registry) -> anyhow::Result<Baseline> {
        // The pipeline's own checks: a misspelt key or a bad value fails here as it would
        // there, and each step below reads its backend's typed settings.
        Pipeline::check(config, registry)?;
        // Follow `next` from the entry node: the baseline is the pipeline's steps in a row.
        let mut order: Vec<&NodeConfig> = Vec::new();
        let entry = config
            .nodes
            .iter()
            .find(|n| !config.nodes.iter().any(|o| o.next.contains(&n.name)))
            .context("the TOML has no entry node")?;
        let mut cur = Some(entry);
        while let Some(node) = cur {
            order.push(node);
            if node.next.len() > 1 {
                bail!(
                    "--baseline runs a straight chain of nodes; [{}] fans out",
                    node.name
                );
            }
            cur = node.next.first().and_then(|n| config.node(n));
        }
        let mut steps = Vec::new();
        let mut model = None;
        for node in order {
            let p = &node.params;
            let mut names = Vec::new();
            leaves(&node.backend, &mut names);
            for name in names {
                match name {
                    "DecodeMat" => steps.push(Step::Decode {
                        max_pixels: DecodeMatSettings::parse(p)?.max_pixels,
                    }),
                    "ResizeMat" => {
                        let s = ResizeMatSettings::parse(p)?;
                        steps.push(Step::Resize { h: s.h, w: s.w })
                    }
                    "cvtColorMat" | "CvtColorMat" => steps.push(Step::Color {
                        rgb: CvtColorMatSettings::parse(p)?.rgb,
                    }),
                    "Mat2Tensor" => steps.push(Step::ToTensor),
                    "TensorrtTensor" => {
                        if model.is_some() {
                            bail!("--baseline supports one model node");
                        }
                        model = Some(node);
                    }
                    "DecodeTensor" | "ResizeTensor" | "cvtColorTensor" | "CvtColorTensor" => bail!(
                        "--baseline is the service users are leaving: it preprocesses on the CPU \
                         in the request threads, and node [{}] uses {name}; start it with a \
                         CPU-preprocessing TOML such as configs/resnet50.toml",
                        node.name
                    ),
                    other => bail!(
                        "--baseline understands DecodeMat, ResizeMat, cvtColorMat, Mat2Tensor and TensorrtTensor; node [{}] uses {other}",
                        node.name
                    ),
                }
            }
        }
        let node = model.context("--baseline needs a node with TensorrtTensor")?;
        // Normalisation happens in the handler, outside the lock, as the users' services do.
        let mean = node
            .params
            .floats("mean", 3)?
            .unwrap_or_else(|| vec![0.0; 3]);
        let std = node
            .params
            .floats("std", 3)?
            .unwrap_or_else(|| vec![1.0; 3]);
        let mut bare = node.clone();
        bare.params = node.params.without(&["mean", "std"]);
        let backend = registry.build_detached(&bare)?;
        Ok(Baseline {
            entry: entry.clone(),
            steps,
            mean,
            inv_std: std.iter().map(|s| 1.0 / s).collect(),
            model: Mutex::new(backend),
        })
    }

    /// Runs one image; blocking (call from a blocking thread).
    /// The entry node: the model the Open Inference Protocol serves.
    pub fn entry(&self) -> &NodeConfig {
        &self.entry
    }

    pub fn infer(&self, bytes: &[u8]) -> Result<Value, String> {
        let mut value = Value::Bytes(bytes.into());
        let mut rgb = false;
        for step in &self.steps {
            value = match (step, value) {
                (Step::Decode { max_pixels }, Value::Bytes(b)) => Value::Mat(
                    image::active::decode_bgr(&b, *max_pixels).map_err(|e| e.to_string())?,
                ),
                (Step::Resize { h, w }, Value::Mat(m)) => {
                    Value::Mat(image::active::resize(&m, *h, *w).map_err(|e| e.to_string())?)
                }
                (Step::Color { rgb: want }, Value::Mat(m)) => {
                    let m = if *want != rgb {
                        image::active::swap_red_blue(m).map_err(|e| e.to_string())?
                    } else {
                        m
                    };
                    rgb = *want;
                    Value::Mat(m)
                }
                (Step::ToTensor, Value::Mat(m)) => Value::Tensor(image::to_chw_f32(&m)),
                (step, v) => {
                    return Err(format!("baseline step {step:?} cannot take {}", v.kind()))
                }
            };
        }
        let Value::Tensor(Tensor { shape, mut data }) = value else {
            return Err("the preprocessing did not end in a tensor (Mat2Tensor)".into());
        };
        let plane = data.len() / self.mean.len().max(1);
        image::normalise_planes(&mut data, plane, &self.mean, &self.inv_std);
        let mut batch = [Item::new(Value::Tensor(Tensor::new(shape, data)))];
        {
            let mut model = self.model.lock();
            model.forward(&mut batch).map_err(|e| e.to_string())?;
        }
        let [item] = batch;
        item.result.ok_or_else(|| {
            item.error
                .unwrap_or_else(|| "the model produced no result".into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A repo TOML after `edit`, its model path pointed at a file that exists (the model is
    /// never loaded here; the parser only checks that the path is there).
    fn repo_config(name: &str, edit: impl FnOnce(String) -> String) -> Config {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../configs")
            .join(name);
        let text = std::fs::read_to_string(&path).unwrap().replace(
            "\"models/resnet50.onnx\"",
            &format!("\"{}/Cargo.toml\"", env!("CARGO_MANIFEST_DIR")),
        );
        Config::parse(&edit(text), &path).unwrap()
    }

    /// Why the baseline refuses `config` (the test fails if it does not).
    fn refusal(config: &Config, what: &str) -> String {
        match Baseline::from_config(config, &Registry::with_defaults()) {
            Ok(_) => panic!("the baseline accepted {what}"),
            Err(e) => e.to_string(),
        }
    }

    /// The GPU TOML's preprocessing cannot run in the baseline's request threads: the error says
    /// which TOML to give it instead, before anything is built.
    #[test]
    fn the_baseline_refuses_gpu_preprocessing_and_says_what_to_use() {
        let config = repo_config("resnet50_gpu.toml", |t| t);
        let err = refusal(&config, "GPU preprocessing");
        assert!(
            err.contains("[gpu_decoder]")
                && err.contains("DecodeTensor")
                && err.contains("configs/resnet50.toml"),
            "{err}"
        );
    }

    /// The baseline reads the same TOML as the pipeline and refuses what the pipeline refuses:
    /// a misspelt key is an error with did-you-mean, not a default silently taken.
    #[test]
    fn the_baseline_refuses_misspelt_keys_as_the_pipeline_does() {
        for (from, to, hint) in [
            ("resize_h", "resize_hh", "resize_h"),
            ("color", "colour", "color"),
        ] {
            let config = repo_config("resnet50.toml", |t| {
                assert!(t.contains(&format!("{from} =")), "{from} not in the TOML");
                t.replacen(&format!("{from} ="), &format!("{to} ="), 1)
            });
            let err = refusal(&config, &format!("`{to}`"));
            assert!(
                err.contains(&format!("`{to}`")) && err.contains(&format!("did you mean `{hint}`")),
                "{err}"
            );
        }
    }
}
