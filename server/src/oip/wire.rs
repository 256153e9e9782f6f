//! The Open Inference Protocol's inference request and response over HTTP, with its binary
//! tensor data extension (Triton's, which `tritonclient` and `perf_analyzer` use): a JSON header
//! of `Inference-Header-Content-Length` bytes, then each binary tensor's bytes in the order the
//! JSON names them. A BYTES tensor in binary is each element as a little-endian u32 length and
//! its bytes; in JSON, an array of strings. UINT8 and FP32 tensors (a decoded image, a model's
//! input) are their elements little-endian in binary, numbers in JSON.

use serde::Deserialize;
use serde_json::{json, Map, Value};

/// Why a request cannot be served as sent: answered with HTTP 400 and `{"error": message}`.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct BadRequest(pub String);

fn bad(msg: impl Into<String>) -> BadRequest {
    BadRequest(msg.into())
}

#[derive(Debug, Deserialize)]
struct RequestHeader {
    id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
    inputs: Vec<InputHeader>,
    #[serde(default)]
    outputs: Vec<OutputRequest>,
}

#[derive(Debug, Deserialize)]
struct InputHeader {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    data: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct OutputRequest {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

/// One input tensor as sent: its name, shape and datatype, and its elements.
#[derive(Debug, PartialEq)]
pub struct Input {
    pub name: String,
    pub shape: Vec<usize>,
    pub datatype: String,
    pub elements: Elements,
}

/// An input tensor's elements, row-major, as its datatype holds them.
#[derive(Debug, PartialEq)]
pub enum Elements {
    /// BYTES: each element's bytes (an encoded image).
    Bytes(Vec<Vec<u8>>),
    /// UINT8 (a decoded image's pixels).
    U8(Vec<u8>),
    /// FP32 (a model's input).
    F32(Vec<f32>),
}

/// The datatypes an input may have, as an error lists them.
const DATATYPES: &str = "BYTES, UINT8 or FP32";

/// An output the client asked for: binary or JSON, and the top-k classes in place of the
/// tensor (the classification extension) when `classification` is set.
#[derive(Debug, PartialEq, Clone)]
pub struct OutputWanted {
    pub name: String,
    pub binary: bool,
    pub classification: Option<usize>,
}

#[derive(Debug, PartialEq)]
pub struct Request {
    pub id: Option<String>,
    pub inputs: Vec<Input>,
    /// Empty: every output, in the form `binary_data_output` says.
    pub outputs: Vec<OutputWanted>,
    /// The request's `binary_data_output` (outputs not named in `outputs` use it).
    pub binary_default: bool,
}

/// Parses a request body: `header_len` from `Inference-Header-Content-Length` (none: the body
/// is all JSON). Every size is checked against the body before anything is allocated for it.
pub fn parse_request(body: &[u8], header_len: Option<usize>) -> Result<Request, BadRequest> {
    let (json_part, mut binary) = match header_len {
        None => (body, &[][..]),
        Some(0) => {
            return Err(bad(
                "Inference-Header-Content-Length 0 (a request without a JSON header) is not \
                 supported; send the JSON header first",
            ))
        }
        Some(n) if n > body.len() => {
            return Err(bad(format!(
                "Inference-Header-Content-Length is {n} bytes, the body only {}",
                body.len()
            )))
        }
        Some(n) => body.split_at(n),
    };
    let header: RequestHeader = serde_json::from_slice(json_part)
        .map_err(|e| bad(format!("the request's JSON cannot be read: {e}")))?;
    let binary_default = flag(&header.parameters, "binary_data_output")?.unwrap_or(false);
    let mut inputs = Vec::with_capacity(header.inputs.len());
    for h in header.inputs {
        let shape = dims(&h.shape, &h.name)?;
        let count = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| bad(format!("input `{}`: shape {:?} overflows", h.name, shape)))?;
        let size = match h.parameters.get("binary_data_size") {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| {
                        bad(format!(
                            "input `{}`: binary_data_size {v} is not a byte count",
                            h.name
                        ))
                    })?,
            ),
        };
        let elements = match (size, &h.data) {
            (Some(_), Some(_)) => {
                return Err(bad(format!(
                    "input `{}` has both `data` and binary_data_size",
                    h.name
                )))
            }
            (None, None) => return Err(bad(format!("input `{}` has no data", h.name))),
            (Some(n), None) => {
                if n > binary.len() {
                    return Err(bad(format!(
                        "input `{}`: binary_data_size {n} is past the body's end ({} bytes left)",
                        h.name,
                        binary.len()
                    )));
                }
                let (mine, rest) = binary.split_at(n);
                binary = rest;
                binary_elements(mine, &h.datatype, count, &h.name)?
            }
            (None, Some(data)) => json_elements(data, &h.datatype, count, &h.name)?,
        };
        inputs.push(Input {
            name: h.name,
            shape,
            datatype: h.datatype,
            elements,
        });
    }
    if !binary.is_empty() {
        return Err(bad(format!(
            "{} bytes after the last binary input",
            binary.len()
        )));
    }
    let outputs = header
        .outputs
        .into_iter()
        .map(|o| {
            let binary = flag(&o.parameters, "binary_data")?.unwrap_or(binary_default);
            let classification = match o.parameters.get("classification") {
                None => None,
                Some(v) => Some(
                    v.as_u64()
                        .filter(|&k| k > 0)
                        .and_then(|k| usize::try_from(k).ok())
                        .ok_or_else(|| {
                            bad(format!(
                                "output `{}`: classification {v} is not a positive count",
                                o.name
                            ))
                        })?,
                ),
            };
            Ok(OutputWanted {
                name: o.name,
                binary,
                classification,
            })
        })
        .collect::<Result<Vec<_>, BadRequest>>()?;
    Ok(Request {
        id: header.id,
        inputs,
        outputs,
        binary_default,
    })
}

/// An input's shape as sent (the protocol's int64 dims), refusing a negative one.
pub(super) fn dims(shape: &[i64], name: &str) -> Result<Vec<usize>, BadRequest> {
    shape
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| {
            bad(format!(
                "input `{name}`: shape {shape:?} has a negative dimension"
            ))
        })
}

fn flag(params: &Map<String, Value>, key: &str) -> Result<Option<bool>, BadRequest> {
    match params.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(bad(format!("parameter {key} = {v} is not true or false"))),
    }
}

/// A binary BYTES tensor: `count` elements, each a little-endian u32 length and its bytes.
pub(super) fn split_bytes(
    mut raw: &[u8],
    count: usize,
    name: &str,
) -> Result<Vec<Vec<u8>>, BadRequest> {
    // Each element takes 4 bytes at least: a count the bytes cannot hold is refused before
    // anything is allocated for it.
    if count > raw.len() / 4 {
        return Err(bad(format!(
            "input `{name}`: {count} BYTES elements cannot fit in {} bytes",
            raw.len()
        )));
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let Some((len, rest)) = raw.split_first_chunk::<4>() else {
            return Err(bad(format!(
                "input `{name}`: element {i} has no length (the tensor's bytes end)"
            )));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > rest.len() {
            return Err(bad(format!(
                "input `{name}`: element {i} is {len} bytes, {} are left",
                rest.len()
            )));
        }
        out.push(rest[..len].to_vec());
        raw = &rest[len..];
    }
    if !raw.is_empty() {
        return Err(bad(format!(
            "input `{name}`: {} bytes after its {count} elements",
            raw.len()
        )));
    }
    Ok(out)
}

/// A binary tensor of `count` elements of `datatype`.
pub(super) fn binary_elements(
    raw: &[u8],
    datatype: &str,
    count: usize,
    name: &str,
) -> Result<Elements, BadRequest> {
    // Fixed-size elements: exactly `count` of `size` bytes.
    let fixed = |size: usize| {
        if count.checked_mul(size) == Some(raw.len()) {
            Ok(raw)
        } else {
            Err(bad(format!(
                "input `{name}`: {} bytes for {count} {datatype} elements of {size} bytes",
                raw.len()
            )))
        }
    };
    match datatype {
        "BYTES" => split_bytes(raw, count, name).map(Elements::Bytes),
        "UINT8" => fixed(1).map(|r| Elements::U8(r.to_vec())),
        "FP32" => fixed(4).map(|r| {
            Elements::F32(
                r.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            )
        }),
        other => Err(unknown_datatype(other, name)),
    }
}

pub(super) fn unknown_datatype(datatype: &str, name: &str) -> BadRequest {
    bad(format!(
        "input `{name}`: datatype {datatype}; this server takes {DATATYPES}"
    ))
}

/// A JSON tensor of `count` elements of `datatype`, flat or nested as the shape is.
fn json_elements(
    data: &Value,
    datatype: &str,
    count: usize,
    name: &str,
) -> Result<Elements, BadRequest> {
    match datatype {
        "BYTES" => json_flat(data, count, name, "BYTES", "a string", |v| {
            v.as_str().map(|s| s.as_bytes().to_vec())
        })
        .map(Elements::Bytes),
        "UINT8" => json_flat(
            data,
            count,
            name,
            "UINT8",
            "an integer from 0 to 255",
            |v| v.as_u64().and_then(|n| u8::try_from(n).ok()),
        )
        .map(Elements::U8),
        // JSON numbers are f64; FP32 is what the tensor holds.
        "FP32" => json_flat(data, count, name, "FP32", "a number", |v| {
            v.as_f64().map(|x| x as f32)
        })
        .map(Elements::F32),
        other => Err(unknown_datatype(other, name)),
    }
}

/// `data`'s leaves in order (arrays flattened), each read by `leaf`; exactly `count` of them.
fn json_flat<T>(
    data: &Value,
    count: usize,
    name: &str,
    datatype: &str,
    what: &str,
    leaf: impl Fn(&Value) -> Option<T>,
) -> Result<Vec<T>, BadRequest> {
    let mut out = Vec::new();
    let mut stack = vec![data];
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(a) => stack.extend(a.iter().rev()),
            other => out.push(leaf(other).ok_or_else(|| {
                bad(format!(
                    "input `{name}`: {datatype} data holds {other}, not {what}"
                ))
            })?),
        }
        if out.len() > count {
            break;
        }
    }
    if out.len() != count {
        return Err(bad(format!(
            "input `{name}`: {} elements in `data`, the shape says {count}",
            out.len()
        )));
    }
    Ok(out)
}

/// One output tensor of a response.
#[derive(Debug, PartialEq)]
pub struct Output {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: OutputData,
    pub binary: bool,
}

#[derive(Debug, PartialEq)]
pub enum OutputData {
    Fp32(Vec<f32>),
    Bytes(Vec<String>),
}

impl OutputData {
    pub(super) fn datatype(&self) -> &'static str {
        match self {
            OutputData::Fp32(_) => "FP32",
            OutputData::Bytes(_) => "BYTES",
        }
    }

    pub(super) fn raw(&self) -> Vec<u8> {
        match self {
            OutputData::Fp32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            OutputData::Bytes(v) => v
                .iter()
                .flat_map(|s| {
                    let len = u32::try_from(s.len()).unwrap_or(u32::MAX).to_le_bytes();
                    len.into_iter().chain(s.bytes())
                })
                .collect(),
        }
    }

    fn json(&self) -> Value {
        match self {
            // A value JSON cannot hold (NaN, ±inf) is written as null.
            OutputData::Fp32(v) => v.iter().map(|&x| json!(x)).collect(),
            OutputData::Bytes(v) => v.iter().map(|s| json!(s)).collect(),
        }
    }
}

/// The response body and, when some output is binary, the JSON header's length (the value of
/// `Inference-Header-Content-Length`).
pub fn encode_response(
    model: &str,
    id: Option<&str>,
    outputs: &[Output],
) -> (Vec<u8>, Option<usize>) {
    let mut binary = Vec::new();
    let mut list = Vec::with_capacity(outputs.len());
    for o in outputs {
        let mut t = json!({
            "name": o.name,
            "datatype": o.data.datatype(),
            "shape": o.shape,
        });
        if o.binary {
            let raw = o.data.raw();
            t["parameters"] = json!({ "binary_data_size": raw.len() });
            binary.extend(raw);
        } else {
            t["data"] = o.data.json();
        }
        list.push(t);
    }
    let mut head = json!({ "model_name": model, "model_version": "1", "outputs": list });
    if let Some(id) = id {
        head["id"] = json!(id);
    }
    let mut body = head.to_string().into_bytes();
    if binary.is_empty() && !outputs.iter().any(|o| o.binary) {
        return (body, None);
    }
    let len = body.len();
    body.extend(binary);
    (body, Some(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn element(bytes: &[u8]) -> Vec<u8> {
        let mut v = (bytes.len() as u32).to_le_bytes().to_vec();
        v.extend_from_slice(bytes);
        v
    }

    /// What tritonclient sends for two photos with binary data: the JSON, then the tensor.
    #[test]
    fn a_binary_bytes_tensor_splits_into_its_elements() {
        let mut tensor = element(b"\xff\xd8jpeg one");
        tensor.extend(element(b"png two"));
        let head = format!(
            r#"{{"id":"7","inputs":[{{"name":"INPUT","shape":[2,1],"datatype":"BYTES","parameters":{{"binary_data_size":{}}}}}],"outputs":[{{"name":"OUTPUT","parameters":{{"binary_data":true,"classification":3}}}}]}}"#,
            tensor.len()
        );
        let mut body = head.clone().into_bytes();
        body.extend(&tensor);
        let r = parse_request(&body, Some(head.len())).unwrap();
        assert_eq!(r.id.as_deref(), Some("7"));
        assert_eq!(r.inputs[0].shape, [2, 1]);
        assert_eq!(
            r.inputs[0].elements,
            Elements::Bytes(vec![b"\xff\xd8jpeg one".to_vec(), b"png two".to_vec()])
        );
        assert_eq!(
            r.outputs,
            [OutputWanted {
                name: "OUTPUT".into(),
                binary: true,
                classification: Some(3)
            }]
        );
    }

    #[test]
    fn json_strings_are_bytes_elements() {
        let body = br#"{"inputs":[{"name":"INPUT","shape":[2],"datatype":"BYTES","data":["a","b"]}],"parameters":{"binary_data_output":true}}"#;
        let r = parse_request(body, None).unwrap();
        assert_eq!(
            r.inputs[0].elements,
            Elements::Bytes(vec![b"a".to_vec(), b"b".to_vec()])
        );
        assert!(r.binary_default);
        assert!(r.outputs.is_empty());
    }

    #[test]
    fn uint8_and_fp32_tensors_read_in_binary_and_json() {
        let pixels = [0u8, 7, 255, 128, 1, 2];
        let floats = [1.5f32, -0.25, f32::MAX];
        let fbytes: Vec<u8> = floats.iter().flat_map(|x| x.to_le_bytes()).collect();
        let head = r#"{"inputs":[{"name":"A","shape":[1,1,2,3],"datatype":"UINT8","parameters":{"binary_data_size":6}},{"name":"B","shape":[3],"datatype":"FP32","parameters":{"binary_data_size":12}}]}"#;
        let mut body = head.as_bytes().to_vec();
        body.extend(pixels);
        body.extend(&fbytes);
        let r = parse_request(&body, Some(head.len())).unwrap();
        assert_eq!(r.inputs[0].elements, Elements::U8(pixels.to_vec()));
        assert_eq!(r.inputs[1].elements, Elements::F32(floats.to_vec()));
        let json = br#"{"inputs":[{"name":"A","shape":[2,3],"datatype":"UINT8","data":[[0,7,255],[128,1,2]]},{"name":"B","shape":[3],"datatype":"FP32","data":[1.5,-0.25,3.4028234663852886e38]}]}"#;
        let r = parse_request(json, None).unwrap();
        assert_eq!(r.inputs[0].elements, Elements::U8(pixels.to_vec()));
        assert_eq!(r.inputs[1].elements, Elements::F32(floats.to_vec()));
        // Fixed-size elements must fill their bytes exactly.
        let head = r#"{"inputs":[{"name":"I","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":4}}]}"#;
        let mut body = head.as_bytes().to_vec();
        body.extend([0; 4]);
        let e = parse_request(&body, Some(head.len())).unwrap_err();
        assert!(
            e.0.contains("4 bytes for 2 FP32 elements of 4 bytes"),
            "{e}"
        );
    }

    #[test]
    fn sizes_past_the_body_and_bad_json_are_refused() {
        let cases: Vec<(Vec<u8>, Option<usize>, &str)> = vec![
            (b"{}".to_vec(), Some(10), "only 2"),
            (b"{not json".to_vec(), None, "cannot be read"),
            (
                br#"{"inputs":[{"name":"I","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":100}}]}"#.to_vec(),
                None,
                "past the body's end",
            ),
            (
                br#"{"inputs":[{"name":"I","shape":[-1],"datatype":"BYTES","data":["a"]}]}"#.to_vec(),
                None,
                "negative",
            ),
            (
                br#"{"inputs":[{"name":"I","shape":[3],"datatype":"BYTES","data":["a"]}]}"#.to_vec(),
                None,
                "the shape says 3",
            ),
            (
                br#"{"inputs":[{"name":"I","shape":[1],"datatype":"BYTES","data":[1]}]}"#.to_vec(),
                None,
                "not a string",
            ),
            (
                br#"{"inputs":[{"name":"I","shape":[1],"datatype":"UINT8","data":[256]}]}"#.to_vec(),
                None,
                "not an integer from 0 to 255",
            ),
            (
                br#"{"inputs":[{"name":"I","shape":[1],"datatype":"INT64","data":[1]}]}"#.to_vec(),
                None,
                "this server takes BYTES, UINT8 or FP32",
            ),
            (
                br#"{"inputs":[{"name":"I","shape":[1],"datatype":"BYTES"}]}"#.to_vec(),
                None,
                "no data",
            ),
            (
                br#"{"inputs":[{"name":"I","shape":[1],"datatype":"BYTES","data":["a"]}],"outputs":[{"name":"O","parameters":{"classification":0}}]}"#.to_vec(),
                None,
                "not a positive count",
            ),
        ];
        for (body, len, want) in cases {
            let e = parse_request(&body, len).unwrap_err();
            assert!(e.0.contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn a_bytes_tensor_with_lengths_past_its_bytes_is_refused() {
        // A huge element count in a tiny tensor is refused before any allocation.
        let e = split_bytes(&[0; 8], 1 << 40, "I").unwrap_err();
        assert!(e.0.contains("cannot fit"), "{e}");
        let e = split_bytes(&element(b"abc")[..5], 1, "I").unwrap_err();
        assert!(e.0.contains("3 bytes, 1 are left"), "{e}");
        let mut two = element(b"a");
        two.push(9);
        let e = split_bytes(&two, 1, "I").unwrap_err();
        assert!(e.0.contains("1 bytes after"), "{e}");
    }

    #[test]
    fn a_response_puts_binary_outputs_after_the_json_in_order() {
        let outputs = [
            Output {
                name: "OUTPUT".into(),
                shape: vec![1, 2],
                data: OutputData::Fp32(vec![1.5, -2.0]),
                binary: true,
            },
            Output {
                name: "CLASS".into(),
                shape: vec![1, 1],
                data: OutputData::Bytes(vec!["0.500000:1".into()]),
                binary: false,
            },
        ];
        let (body, len) = encode_response("m", Some("9"), &outputs);
        let len = len.unwrap();
        let head: Value = serde_json::from_slice(&body[..len]).unwrap();
        assert_eq!(head["id"], "9");
        assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 8);
        assert_eq!(head["outputs"][1]["data"][0], "0.500000:1");
        assert!(head["outputs"][1].get("parameters").is_none());
        let raw: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!(&body[len..], &raw[..]);
        let (all_json, none) = encode_response("m", None, &outputs[1..]);
        assert_eq!(none, None);
        let head: Value = serde_json::from_slice(&all_json).unwrap();
        assert!(head.get("id").is_none());
    }
}
