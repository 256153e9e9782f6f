//! The dict that flows through the nodes, as in TorchPipe: `data` in, `result` out, plus extras.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::RequestError;

/// What became of one item of a request: the item with its result, or why it failed.
pub type Outcome = Result<Item, RequestError>;

/// An image held as TorchPipe's `cv::Mat`: rows of interleaved channels (HWC), u8, BGR unless a
/// backend says otherwise. The pixels are shared, as a `cv::Mat`'s are: a copy of the item (a
/// fan-out branch, a `MapReduce` child, a value kept for a later `map`) does not copy them.
/// Copied into every child, the decoded photo made items wait 46 ms at the post-processing node
/// that splits them (configs/detect_classify.toml's pipeline with YOLOv8n, 12 boxes a photo, 20
/// clients, H100 box); shared, 0.4 ms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mat {
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub data: Arc<Vec<u8>>,
}

impl Mat {
    pub fn new(height: usize, width: usize, channels: usize, data: Vec<u8>) -> Self {
        debug_assert_eq!(data.len(), height * width * channels);
        Mat {
            height,
            width,
            channels,
            data: Arc::new(data),
        }
    }

    /// The pixels to write: copied first only where another value shares them.
    pub fn data_mut(&mut self) -> &mut Vec<u8> {
        Arc::make_mut(&mut self.data)
    }

    /// The pixels, owned: copied only where another value shares them.
    pub fn into_data(self) -> Vec<u8> {
        Arc::try_unwrap(self.data).unwrap_or_else(|shared| (*shared).clone())
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

/// Memory on the GPU that a value lives in. Implemented by the GPU module's pooled buffers; the
/// rest of the engine only passes it along.
pub trait DeviceMemory: Send + Sync + std::fmt::Debug {
    /// The device address (a `CUdeviceptr`).
    fn ptr(&self) -> u64;
    /// How many bytes at `ptr` belong to this value.
    fn bytes(&self) -> usize;
    /// The GPU (CUDA device index, as `device_id` names it) the memory is on.
    fn device(&self) -> usize;
}

/// How the bytes of a GPU value are laid out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceLayout {
    /// An image as `Mat` holds one: HWC u8, rows `height × width × channels` packed.
    Image {
        height: usize,
        width: usize,
        channels: usize,
    },
    /// A dense row-major f32 tensor, as `Tensor` holds one.
    Tensor { shape: Vec<usize> },
}

/// A value resident on the GPU (DecodeTensor's image, ResizeTensor's tensor). The backend that
/// made it has synchronised its stream, so any stream may read it.
#[derive(Clone, Debug)]
pub struct DeviceValue {
    pub layout: DeviceLayout,
    pub mem: Arc<dyn DeviceMemory>,
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
    Device(DeviceValue),
    /// One value per child of a `MapReduce` node (its `merge` keys), in the order of `split`.
    List(Vec<Value>),
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
            Value::List(_) => "a list",
            Value::Device(DeviceValue {
                layout: DeviceLayout::Image { .. },
                ..
            }) => "an image on the GPU",
            Value::Device(DeviceValue {
                layout: DeviceLayout::Tensor { .. },
                ..
            }) => "a tensor on the GPU",
        }
    }
}

impl From<Vec<u8>> for Value {
    fn from(bytes: Vec<u8>) -> Self {
        Value::Bytes(bytes.into())
    }
}

/// The extra holding one box (x1, y1, x2, y2, …) that `CropMat` and `CropTensor` cut out:
/// TorchPipe's `TASK_BOX_KEY`.
pub const BOX: &str = "_box";

/// A key as the pipeline stores it: TorchPipe's constant names (`TASK_DATA_KEY`,
/// `TASK_RESULT_KEY`, `TASK_BOX_KEY`), which its TOMLs write in `map`, `split` and `merge`, are
/// the keys they stand for.
pub fn canonical_key(key: &str) -> &str {
    match key {
        "TASK_DATA_KEY" => "data",
        "TASK_RESULT_KEY" => "result",
        "TASK_BOX_KEY" => BOX,
        other => other,
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

    /// The image's current channel order, from the `color` extra that DecodeMat, DecodeTensor
    /// and the colour backends keep: RGB only when it says so (OpenCV's images are BGR).
    pub fn is_rgb(&self) -> bool {
        matches!(self.extras.get("color"), Some(Value::Text(c)) if c == "rgb")
    }

    /// Records the image's channel order in the `color` extra.
    pub fn set_color(&mut self, rgb: bool) {
        let name = if rgb { "rgb" } else { "bgr" };
        self.extras.insert("color".into(), Value::Text(name.into()));
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
