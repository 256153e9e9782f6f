//! The dict that flows through the nodes, as in TorchPipe: `data` in, `result` out, plus extras.

use std::collections::BTreeMap;
use std::sync::Arc;

/// An image held as TorchPipe's `cv::Mat`: rows of interleaved channels (HWC), u8, BGR unless a
/// backend says otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mat {
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub data: Vec<u8>,
}

impl Mat {
    pub fn new(height: usize, width: usize, channels: usize, data: Vec<u8>) -> Self {
        debug_assert_eq!(data.len(), height * width * channels);
        Mat {
            height,
            width,
            channels,
            data,
        }
    }
}

/// A dense f32 tensor in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Tensor { shape, data }
    }
}

/// A classification: the arg-max class and its softmax probability.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Class {
    pub index: usize,
    pub score: f64,
}

#[derive(Clone, Debug, Default)]
pub enum Value {
    #[default]
    Empty,
    /// Encoded bytes (a JPEG off the wire). Shared so that fan-out does not copy them.
    Bytes(Arc<[u8]>),
    Mat(Mat),
    Tensor(Tensor),
    Class(Class),
    Text(String),
}

impl Value {
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Empty => "nothing",
            Value::Bytes(_) => "bytes",
            Value::Mat(_) => "an image (Mat)",
            Value::Tensor(_) => "a tensor",
            Value::Class(_) => "a class",
            Value::Text(_) => "text",
        }
    }
}

impl From<Vec<u8>> for Value {
    fn from(bytes: Vec<u8>) -> Self {
        Value::Bytes(bytes.into())
    }
}

/// One unit of work moving through the pipeline.
#[derive(Clone, Debug, Default)]
pub struct Item {
    pub data: Value,
    pub result: Option<Value>,
    /// The node to enter at; `None` means the pipeline's single entry node.
    pub node_name: Option<String>,
    pub extras: BTreeMap<String, Value>,
    /// Why the last backend produced no `result` for this item (a corrupt JPEG, say).
    pub error: Option<String>,
}

impl Item {
    pub fn new(data: impl Into<Value>) -> Self {
        Item {
            data: data.into(),
            ..Item::default()
        }
    }

    /// Marks this item as failed by the current backend: no result, and the reason.
    pub fn fail(&mut self, reason: impl Into<String>) {
        self.result = None;
        self.error = Some(reason.into());
    }

    /// Reads a field by the names `map` uses: `data`, `result`, or an extra.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match key {
            "data" => Some(&self.data),
            "result" => self.result.as_ref(),
            other => self.extras.get(other),
        }
    }

    pub fn set(&mut self, key: &str, value: Value) {
        match key {
            "data" => self.data = value,
            "result" => self.result = Some(value),
            other => {
                self.extras.insert(other.to_string(), value);
            }
        }
    }
}
