//! `torchpipe_rs._native`: the engine's pipeline in-process for Python. The Python package
//! (`torchpipe_rs/__init__.py`) wraps it; this file only converts between Python objects and
//! the engine's items, and releases the GIL while the pipeline works, so that many Python
//! threads calling one pipe get the pipeline's throughput.

mod dlpack;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use engine::{Class, Config, Item, Mat, Pipeline, PipelineOptions, Registry, Tensor, Value};
use numpy::{PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple,
};

pyo3::create_exception!(
    _native,
    ConfigError,
    PyValueError,
    "A TOML pipeline that cannot be built: the message names the file, node, key, value and \
     what was expected, as the server's does."
);

const DATA: &str = "data";
const RESULT: &str = "result";
const NODE_NAME: &str = "node_name";
const ERROR: &str = "error";
const SCORE: &str = "score";
/// One box per row (x1, y1, x2, y2, score, class) where a `MapReduce` classified each box.
const BOX: &str = engine::BOX;

/// A loaded pipeline. Calls from several threads run concurrently (the GIL is released while
/// the engine works); dropping the last reference stops it.
#[pyclass(frozen, module = "torchpipe_rs._native")]
struct Pipe {
    inner: Arc<Pipeline>,
    file: PathBuf,
}

#[pymethods]
impl Pipe {
    /// `config`: a TOML path, or the dict `parse_toml` returns (relative paths in it resolve
    /// against the working directory).
    #[new]
    #[pyo3(signature = (config, request_timeout = 10.0))]
    fn new(py: Python<'_>, config: &Bound<'_, PyAny>, request_timeout: f64) -> PyResult<Pipe> {
        if !(request_timeout.is_finite() && request_timeout > 0.0) {
            return Err(PyValueError::new_err(format!(
                "request_timeout must be a positive number of seconds, not {request_timeout}"
            )));
        }
        let (config, file) = load_config(config)?;
        let options = PipelineOptions {
            request_timeout: Duration::from_secs_f64(request_timeout),
        };
        let pipeline = py
            .detach(|| Pipeline::build(config, Registry::with_defaults(), options))
            .map_err(|e| ConfigError::new_err(e.to_string()))?;
        Ok(Pipe {
            inner: Arc::new(pipeline),
            file,
        })
    }

    /// Runs one dict or a list of dicts through the pipeline as concurrent items of one
    /// request and waits for them. Each dict gets `result` on success; on failure `result` is
    /// removed and `error` holds the reason. A class result also sets `score`.
    fn __call__(&self, py: Python<'_>, inputs: &Bound<'_, PyAny>) -> PyResult<()> {
        let dicts: Vec<Bound<'_, PyDict>> = if let Ok(d) = inputs.cast::<PyDict>() {
            vec![d.clone()]
        } else if let Ok(list) = inputs.cast::<PyList>() {
            list.iter()
                .enumerate()
                .map(|(i, d)| {
                    d.cast_into::<PyDict>().map_err(|_| {
                        PyTypeError::new_err(format!("input {i} of the list is not a dict"))
                    })
                })
                .collect::<PyResult<_>>()?
        } else {
            return Err(PyTypeError::new_err(format!(
                "a pipe takes a dict or a list of dicts, not {}",
                inputs.get_type().name()?
            )));
        };
        let mut items = Vec::with_capacity(dicts.len());
        for (i, d) in dicts.iter().enumerate() {
            items.push(item_of(d).map_err(|e| prefix(e, dicts.len(), i, py))?);
        }
        let pipeline = self.inner.clone();
        // A request refused as a whole (a node name that is not an entry, a full queue, a
        // pipe shutting down) raises; items that fail inside the pipeline get `error`.
        let outcomes = py
            .detach(move || pipeline.run(items))
            .map_err(|e| match e {
                engine::RequestError::UnknownNode(_) => PyValueError::new_err(e.to_string()),
                e => PyRuntimeError::new_err(e.to_string()),
            })?;
        for (d, outcome) in dicts.iter().zip(outcomes) {
            for key in [RESULT, ERROR, SCORE, BOX] {
                if d.contains(key)? {
                    d.del_item(key)?;
                }
            }
            let reason = match outcome {
                Ok(mut item) => match item.result {
                    Some(value) => match to_python(py, value)? {
                        Ok((result, score)) => {
                            d.set_item(RESULT, result)?;
                            if let Some(s) = score {
                                d.set_item(SCORE, s)?;
                            }
                            if let Some(Value::Tensor(t)) = item.extras.remove(BOX) {
                                d.set_item(BOX, array(py, t)?)?;
                            }
                            None
                        }
                        Err(reason) => Some(reason),
                    },
                    None => Some(
                        item.error
                            .unwrap_or_else(|| "the pipeline produced no result".into()),
                    ),
                },
                Err(e) => Some(e.to_string()),
            };
            if let Some(reason) = reason {
                d.set_item(ERROR, reason)?;
            }
        }
        Ok(())
    }

    /// The nodes a request may enter at (`node_name`).
    fn entry_nodes(&self) -> Vec<String> {
        self.inner
            .entry_nodes()
            .into_iter()
            .map(String::from)
            .collect()
    }

    fn __repr__(&self) -> String {
        let nodes: Vec<&str> = self
            .inner
            .config()
            .nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect();
        format!("pipe({:?}, nodes [{}])", self.file, nodes.join(", "))
    }
}

/// The error of input `i` of `n`, named when there are several.
fn prefix(e: PyErr, n: usize, i: usize, py: Python<'_>) -> PyErr {
    if n == 1 {
        return e;
    }
    let msg = format!("input {i}: {}", e.value(py));
    if e.is_instance_of::<PyTypeError>(py) {
        PyTypeError::new_err(msg)
    } else {
        PyValueError::new_err(msg)
    }
}

fn load_config(config: &Bound<'_, PyAny>) -> PyResult<(Config, PathBuf)> {
    if let Ok(d) = config.cast::<PyDict>() {
        let table = table_of(d, "")?;
        let text = toml::to_string(&table)
            .map_err(|e| ConfigError::new_err(format!("the dict is not a TOML table: {e}")))?;
        // Relative paths resolve against the folder of the file a config came from: for a
        // dict, the working directory.
        let file = std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("."))
            .join("<dict>");
        let parsed =
            Config::parse(&text, &file).map_err(|e| ConfigError::new_err(e.to_string()))?;
        return Ok((parsed, file));
    }
    let path: PathBuf = config.extract().map_err(|_| {
        PyTypeError::new_err(format!(
            "config must be a TOML path or the dict parse_toml returns, not {}",
            config
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })?;
    let parsed = Config::load(&path).map_err(|e| ConfigError::new_err(e.to_string()))?;
    Ok((parsed, path))
}

/// An input dict as an item: `data` (bytes, str, or a numpy array: float32 as a tensor, uint8
/// `[h, w, c]` as an image) and `node_name`.
fn item_of(d: &Bound<'_, PyDict>) -> PyResult<Item> {
    let data = d.get_item(DATA)?.ok_or_else(|| {
        PyValueError::new_err(format!(
            "an input dict needs its data under TASK_DATA_KEY ({DATA:?})"
        ))
    })?;
    let mut item = Item::new(value_of(&data)?);
    if let Some(node) = d.get_item(NODE_NAME)? {
        item.node_name = Some(node.extract().map_err(|_| {
            PyTypeError::new_err(format!("{NODE_NAME:?} must be a node's name (a str)"))
        })?);
    }
    Ok(item)
}

fn value_of(data: &Bound<'_, PyAny>) -> PyResult<Value> {
    if let Ok(b) = data.cast::<PyBytes>() {
        return Ok(Value::Bytes(Arc::from(b.as_bytes())));
    }
    if let Ok(b) = data.cast::<PyByteArray>() {
        return Ok(Value::Bytes(Arc::from(b.to_vec())));
    }
    if let Ok(s) = data.cast::<PyString>() {
        return Ok(Value::Text(s.to_cow()?.into_owned()));
    }
    if let Ok(a) = data.cast::<PyArrayDyn<f32>>() {
        let shape = a.shape().to_vec();
        let data = a
            .to_vec()
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        return Ok(Value::Tensor(Tensor::new(shape, data)));
    }
    if let Ok(a) = data.cast::<PyArrayDyn<u8>>() {
        return match *a.shape() {
            [h, w, c] if (1..=4).contains(&c) => {
                let bytes = a
                    .to_vec()
                    .map_err(|e| PyValueError::new_err(e.to_string()))?;
                Ok(Value::Mat(Mat::new(h, w, c, bytes)))
            }
            ref s => Err(PyValueError::new_err(format!(
                "a uint8 array is an image [height, width, channels] with 1 to 4 channels, not \
                 of shape {s:?}"
            ))),
        };
    }
    Err(PyTypeError::new_err(format!(
        "data must be bytes (an encoded image), str, or a numpy array (float32 tensor, uint8 \
         image); got {}",
        data.get_type().name()?
    )))
}

/// A result as Python objects (and the score of a class, or the scores of a list of classes),
/// or why it cannot be returned.
type Converted<'py> = Result<(Bound<'py, PyAny>, Option<Bound<'py, PyAny>>), String>;

fn array(py: Python<'_>, t: Tensor) -> PyResult<Bound<'_, PyAny>> {
    Ok(numpy::PyArray1::from_vec(py, t.data)
        .reshape(t.shape)?
        .into_any())
}

fn to_python(py: Python<'_>, value: Value) -> PyResult<Converted<'_>> {
    Ok(Ok(match value {
        Value::Tensor(t) => (array(py, t)?, None),
        Value::Class(Class { index, score }) => (
            index.into_pyobject(py)?.into_any(),
            Some(PyFloat::new(py, score).into_any()),
        ),
        // A `MapReduce`'s classes, one per box: the classes and their probabilities as arrays.
        Value::List(values) if values.iter().all(|v| matches!(v, Value::Class(_))) => {
            let (indices, scores): (Vec<i64>, Vec<f64>) = values
                .iter()
                .filter_map(|v| match v {
                    Value::Class(c) => Some((i64::try_from(c.index).unwrap_or(i64::MAX), c.score)),
                    _ => None,
                })
                .unzip();
            (
                numpy::PyArray1::from_vec(py, indices).into_any(),
                Some(numpy::PyArray1::from_vec(py, scores).into_any()),
            )
        }
        Value::List(values) => {
            let mut out = Vec::with_capacity(values.len());
            for v in values {
                match to_python(py, v)? {
                    Ok((obj, _)) => out.push(obj),
                    Err(reason) => return Ok(Err(reason)),
                }
            }
            (PyList::new(py, out)?.into_any(), None)
        }
        Value::Mat(m) => {
            let shape = [m.height, m.width, m.channels];
            let array = numpy::PyArray1::from_vec(py, m.into_data()).reshape(shape)?;
            (array.into_any(), None)
        }
        Value::Bytes(b) => (PyBytes::new(py, &b).into_any(), None),
        Value::Text(s) => (PyString::new(py, &s).into_any(), None),
        Value::Empty => (py.None().into_bound(py), None),
        Value::Device(v) => match dlpack::DeviceArray::new(v) {
            Ok(a) => (Bound::new(py, a)?.into_any(), None),
            Err(reason) => return Ok(Err(reason)),
        },
    }))
}

/// A Python dict as a TOML table; `at` names where it sits, for errors.
fn table_of(d: &Bound<'_, PyDict>, at: &str) -> PyResult<toml::Table> {
    let mut table = toml::Table::new();
    for (k, v) in d.iter() {
        let key: String = k
            .extract()
            .map_err(|_| PyTypeError::new_err(format!("config{at}: keys must be str")))?;
        let here = format!("{at}[{key:?}]");
        table.insert(key, toml_of(&v, &here)?);
    }
    Ok(table)
}

fn toml_of(v: &Bound<'_, PyAny>, at: &str) -> PyResult<toml::Value> {
    // bool before int: Python's bool is an int.
    if let Ok(b) = v.cast::<PyBool>() {
        return Ok(toml::Value::Boolean(b.is_true()));
    }
    if v.cast::<PyInt>().is_ok() {
        let i: i64 = v
            .extract()
            .map_err(|_| PyValueError::new_err(format!("config{at}: integer out of range")))?;
        return Ok(toml::Value::Integer(i));
    }
    if let Ok(f) = v.cast::<PyFloat>() {
        return Ok(toml::Value::Float(f.value()));
    }
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(toml::Value::String(s.to_cow()?.into_owned()));
    }
    if let Ok(d) = v.cast::<PyDict>() {
        return Ok(toml::Value::Table(table_of(d, at)?));
    }
    if v.cast::<PyList>().is_ok() || v.cast::<PyTuple>().is_ok() {
        let items = v
            .try_iter()?
            .enumerate()
            .map(|(i, x)| toml_of(&x?, &format!("{at}[{i}]")))
            .collect::<PyResult<Vec<_>>>()?;
        return Ok(toml::Value::Array(items));
    }
    Err(PyTypeError::new_err(format!(
        "config{at}: {} is not a TOML value (str, int, float, bool, dict, list)",
        v.get_type().name()?
    )))
}

fn python_of<'py>(py: Python<'py>, v: &toml::Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        toml::Value::String(s) => PyString::new(py, s).into_any(),
        toml::Value::Integer(i) => i.into_pyobject(py)?.into_any(),
        toml::Value::Float(f) => PyFloat::new(py, *f).into_any(),
        toml::Value::Boolean(b) => PyBool::new(py, *b).to_owned().into_any(),
        toml::Value::Datetime(d) => PyString::new(py, &d.to_string()).into_any(),
        toml::Value::Array(a) => {
            let items = a
                .iter()
                .map(|x| python_of(py, x))
                .collect::<PyResult<Vec<_>>>()?;
            PyList::new(py, items)?.into_any()
        }
        toml::Value::Table(t) => {
            let d = PyDict::new(py);
            for (k, x) in t {
                d.set_item(k, python_of(py, x)?)?;
            }
            d.into_any()
        }
    })
}

/// The TOML at `path` as a dict (global keys, then one dict per node), after the same checks
/// `pipe` and the server make.
#[pyfunction]
fn parse_toml<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyAny>> {
    Config::load(&path).map_err(|e| ConfigError::new_err(e.to_string()))?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ConfigError::new_err(format!("{}: {e}", path.display())))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        ConfigError::new_err(format!("{}: {e}", Path::new(&path).display()))
    })?;
    python_of(py, &toml::Value::Table(table))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Pipe>()?;
    m.add_class::<dlpack::DeviceArray>()?;
    m.add_function(wrap_pyfunction!(parse_toml, m)?)?;
    m.add("ConfigError", m.py().get_type::<ConfigError>())?;
    m.add("TASK_DATA_KEY", DATA)?;
    m.add("TASK_RESULT_KEY", RESULT)?;
    m.add("TASK_NODE_NAME_KEY", NODE_NAME)?;
    m.add("TASK_ERROR_KEY", ERROR)?;
    m.add("TASK_SCORE_KEY", SCORE)?;
    m.add("TASK_BOX_KEY", BOX)?;
    m.add("CUDA", cfg!(feature = "cuda"))?;
    Ok(())
}
