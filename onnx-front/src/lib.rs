//! The ONNX front-end both model engines read through, so that a file either engine accepts
//! the other reads the same way:
//! - weights stored in external data files (PyTorch's dynamo exporter writes them to
//!   `model.onnx.data` by default) are read into the graph, with their paths resolved inside
//!   the model's folder and their sizes checked against each tensor's dims;
//! - shape hints are dropped: `value_info` and the graph outputs' shapes name the exporter's own
//!   batch symbol (`batch_size`, `s77`, …), which the engines replace by theirs, and an engine
//!   infers every shape from the input anyway.
//!
//! What is left is a self-contained `ModelProto` that tract (the CPU engine) and the GPU
//! importer parse as it is.

mod constants;
pub mod files;
pub mod fold;
pub mod modelgen;

pub use constants::fold_float_constants;

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use prost::Message;
use tract_onnx::pb;

#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not an ONNX model: {source}", path.display())]
    Decode {
        path: PathBuf,
        source: prost::DecodeError,
    },
    #[error("{} has no graph", path.display())]
    NoGraph { path: PathBuf },
    /// A tensor whose bytes are in an external data file that cannot be used as written.
    #[error("{}: tensor `{tensor}` is stored in external data {why}", model.display())]
    External {
        model: PathBuf,
        tensor: String,
        why: String,
    },
}

/// Reads `path` with its external data, normalised as the module says. `digest` sees every
/// byte the model is made of (the `.onnx` file, then each data file once, in the order the
/// graph first refers to them), for caches keyed by the model's content.
pub fn read(path: &Path, digest: &mut dyn FnMut(&[u8])) -> Result<pb::ModelProto, OnnxError> {
    let bytes = std::fs::read(path).map_err(|source| OnnxError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    digest(&bytes);
    let mut model =
        pb::ModelProto::decode(bytes.as_slice()).map_err(|source| OnnxError::Decode {
            path: path.to_path_buf(),
            source,
        })?;
    drop(bytes);
    let graph = model.graph.as_mut().ok_or_else(|| OnnxError::NoGraph {
        path: path.to_path_buf(),
    })?;
    let mut data = DataFiles {
        model: path,
        dir: path.parent().unwrap_or(Path::new(".")),
        files: HashMap::new(),
        digest,
    };
    data.inline_graph(graph)?;
    drop_shape_hints(graph);
    Ok(model)
}

/// `value_info` and output shapes are hints an exporter adds; they carry its own name for the
/// batch dimension, which conflicts with the symbol an engine gives its input.
fn drop_shape_hints(graph: &mut pb::GraphProto) {
    graph.value_info.clear();
    for output in &mut graph.output {
        if let Some(pb::type_proto::Value::TensorType(t)) =
            output.r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            t.shape = None;
        }
    }
}

/// The external data files of one model, each read once.
struct DataFiles<'a> {
    model: &'a Path,
    dir: &'a Path,
    files: HashMap<PathBuf, Vec<u8>>,
    digest: &'a mut dyn FnMut(&[u8]),
}

impl DataFiles<'_> {
    /// Every tensor of the graph and of its sub-graphs (`If`, `Loop`, `Scan` bodies).
    fn inline_graph(&mut self, graph: &mut pb::GraphProto) -> Result<(), OnnxError> {
        for t in &mut graph.initializer {
            self.inline(t)?;
        }
        for node in &mut graph.node {
            for a in &mut node.attribute {
                if let Some(t) = a.t.as_mut() {
                    self.inline(t)?;
                }
                for t in &mut a.tensors {
                    self.inline(t)?;
                }
                if let Some(g) = a.g.as_mut() {
                    self.inline_graph(g)?;
                }
                for g in &mut a.graphs {
                    self.inline_graph(g)?;
                }
            }
        }
        Ok(())
    }

    fn inline(&mut self, t: &mut pb::TensorProto) -> Result<(), OnnxError> {
        if t.data_location != Some(pb::tensor_proto::DataLocation::External as i32) {
            return Ok(());
        }
        let entry = |key: &str| {
            t.external_data
                .iter()
                .find(|e| e.key == key)
                .map(|e| e.value.as_str())
        };
        let number = |key: &str| -> Result<Option<usize>, String> {
            entry(key)
                .map(|v| {
                    v.trim()
                        .parse::<usize>()
                        .map_err(|_| format!("with {key} `{v}`, which is not a byte count"))
                })
                .transpose()
        };
        let located = entry("location")
            .ok_or_else(|| "with no `location` entry".to_string())
            .and_then(|location| Ok((location, number("offset")?, number("length")?)));
        let (location, offset, length) = located.map_err(|why| self.error(t, why))?;
        let data_path = self.resolve(location).map_err(|why| self.error(t, why))?;
        if !self.files.contains_key(&data_path) {
            let bytes = std::fs::read(&data_path).map_err(|e| {
                self.error(
                    t,
                    format!(
                        "file {}, which cannot be read ({e}); the exporter writes it beside \
                         the model and both must be copied together",
                        data_path.display()
                    ),
                )
            })?;
            (self.digest)(&bytes);
            self.files.insert(data_path.clone(), bytes);
        }
        let file = &self.files[&data_path];
        let offset = offset.unwrap_or(0);
        let length = length.unwrap_or(file.len().saturating_sub(offset));
        let slice = offset
            .checked_add(length)
            .and_then(|end| file.get(offset..end))
            .ok_or_else(|| {
                self.error(
                    t,
                    format!(
                        "file {} at bytes {offset}..{}, but the file holds {} bytes: it is \
                         truncated, or belongs to another export of the model",
                        data_path.display(),
                        offset.saturating_add(length),
                        file.len()
                    ),
                )
            })?;
        if let Some(expected) = byte_size(t) {
            if expected != slice.len() {
                let why = format!(
                    "file {} with a length of {} bytes, but its dims {:?} of data type {} \
                     need {expected}",
                    data_path.display(),
                    slice.len(),
                    t.dims,
                    t.data_type
                );
                return Err(self.error(t, why));
            }
        }
        t.raw_data = slice.to_vec();
        t.data_location = None;
        t.external_data.clear();
        Ok(())
    }

    /// ONNX's rule: a location is relative to the model's folder. One that leaves it (an
    /// absolute path, `..`) is refused rather than read from wherever it points.
    fn resolve(&self, location: &str) -> Result<PathBuf, String> {
        let relative = Path::new(location);
        let inside = relative
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !inside || location.is_empty() {
            return Err(format!(
                "at location `{location}`, which is not a path inside the model's folder {}",
                self.dir.display()
            ));
        }
        Ok(self.dir.join(relative))
    }

    fn error(&self, t: &pb::TensorProto, why: String) -> OnnxError {
        OnnxError::External {
            model: self.model.to_path_buf(),
            tensor: t.name.clone(),
            why,
        }
    }
}

/// Bytes a tensor of this data type and dims holds; `None` for types without a fixed size.
fn byte_size(t: &pb::TensorProto) -> Option<usize> {
    use pb::tensor_proto::DataType as D;
    let element = match D::try_from(t.data_type).ok()? {
        D::Float | D::Int32 | D::Uint32 => 4,
        D::Double | D::Int64 | D::Uint64 | D::Complex64 => 8,
        D::Float16 | D::Bfloat16 | D::Int16 | D::Uint16 => 2,
        D::Int8 | D::Uint8 | D::Bool => 1,
        D::Complex128 => 16,
        _ => return None,
    };
    t.dims.iter().try_fold(element, |acc: usize, &d| {
        acc.checked_mul(usize::try_from(d).ok()?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn external(name: &str, dims: &[i64], entries: &[(&str, &str)]) -> pb::TensorProto {
        pb::TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: pb::tensor_proto::DataType::Float as i32,
            data_location: Some(pb::tensor_proto::DataLocation::External as i32),
            external_data: entries
                .iter()
                .map(|(k, v)| pb::StringStringEntryProto {
                    key: (*k).into(),
                    value: (*v).into(),
                })
                .collect(),
            ..Default::default()
        }
    }

    fn write_model(dir: &Path, tensors: Vec<pb::TensorProto>) -> PathBuf {
        let model = pb::ModelProto {
            graph: Some(pb::GraphProto {
                initializer: tensors,
                value_info: vec![pb::ValueInfoProto {
                    name: "hint".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let path = dir.join("m.onnx");
        std::fs::write(&path, model.encode_to_vec()).unwrap();
        path
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("onnx-front-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn floats(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn external_tensors_are_read_at_their_offsets_and_hints_dropped() {
        let d = dir("ok");
        std::fs::write(d.join("m.onnx.data"), floats(&[1.0, 2.0, 3.0, 4.0, 5.0])).unwrap();
        let path = write_model(
            &d,
            vec![
                external("a", &[2], &[("location", "m.onnx.data"), ("length", "8")]),
                external(
                    "b",
                    &[3],
                    &[
                        ("location", "./m.onnx.data"),
                        ("offset", "8"),
                        ("length", "12"),
                    ],
                ),
            ],
        );
        let mut seen = 0;
        let m = read(&path, &mut |b| seen += b.len()).unwrap();
        let g = m.graph.unwrap();
        assert_eq!(g.initializer[0].raw_data, floats(&[1.0, 2.0]));
        assert_eq!(g.initializer[1].raw_data, floats(&[3.0, 4.0, 5.0]));
        assert!(g.initializer.iter().all(|t| t.external_data.is_empty()));
        assert!(g.value_info.is_empty());
        // The model file, then the data file once.
        assert_eq!(seen, std::fs::metadata(&path).unwrap().len() as usize + 20);
    }

    #[test]
    fn a_missing_data_file_names_both_files() {
        let d = dir("missing");
        let path = write_model(
            &d,
            vec![external("fc.bias", &[2], &[("location", "gone.data")])],
        );
        let e = read(&path, &mut |_| {}).unwrap_err().to_string();
        assert!(e.contains("m.onnx") && e.contains("gone.data"), "{e}");
        assert!(
            e.contains("`fc.bias`") && e.contains("cannot be read"),
            "{e}"
        );
    }

    #[test]
    fn a_truncated_data_file_says_so() {
        let d = dir("truncated");
        std::fs::write(d.join("w.data"), floats(&[1.0])).unwrap();
        let path = write_model(
            &d,
            vec![external(
                "w",
                &[2],
                &[("location", "w.data"), ("length", "8")],
            )],
        );
        let e = read(&path, &mut |_| {}).unwrap_err().to_string();
        assert!(e.contains("w.data at bytes 0..8"), "{e}");
        assert!(
            e.contains("holds 4 bytes") && e.contains("truncated"),
            "{e}"
        );
    }

    #[test]
    fn a_length_that_does_not_fit_the_dims_is_refused() {
        let d = dir("size");
        std::fs::write(d.join("w.data"), floats(&[1.0, 2.0, 3.0])).unwrap();
        let path = write_model(&d, vec![external("w", &[2], &[("location", "w.data")])]);
        let e = read(&path, &mut |_| {}).unwrap_err().to_string();
        assert!(
            e.contains("length of 12 bytes") && e.contains("need 8"),
            "{e}"
        );
    }

    #[test]
    fn locations_outside_the_model_folder_are_refused() {
        let d = dir("outside");
        for location in ["../w.data", "/etc/passwd", ""] {
            let path = write_model(&d, vec![external("w", &[1], &[("location", location)])]);
            let e = read(&path, &mut |_| {}).unwrap_err().to_string();
            assert!(
                e.contains("not a path inside the model's folder"),
                "{location}: {e}"
            );
        }
        let path = write_model(&d, vec![external("w", &[1], &[("offset", "0")])]);
        let e = read(&path, &mut |_| {}).unwrap_err().to_string();
        assert!(e.contains("no `location`"), "{e}");
        let path = write_model(
            &d,
            vec![external("w", &[1], &[("location", "w"), ("offset", "x")])],
        );
        let e = read(&path, &mut |_| {}).unwrap_err().to_string();
        assert!(e.contains("offset `x`, which is not a byte count"), "{e}");
    }

    #[test]
    fn not_an_onnx_file() {
        let d = dir("garbage");
        let path = d.join("m.onnx");
        std::fs::write(&path, b"\xff\xff\xff not protobuf").unwrap();
        let e = read(&path, &mut |_| {}).unwrap_err().to_string();
        assert!(e.contains("is not an ONNX model"), "{e}");
        let e = read(&d.join("absent.onnx"), &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot read") && e.contains("absent.onnx"),
            "{e}"
        );
    }
}
