//! `model::cache`: what start-up converted and tuned, so a restart skips it. One file: a magic
//! line, a JSON header (the key it is valid for, the kernels' PTX, the chosen algorithm per
//! convolution and batch size), then the folded weights in the device layout.
//! A file that does not match the model, the device, cuDNN or the precision is rebuilt, and
//! the log says which of them differed.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::conv::Algo;
use super::precision::Precision;

/// Bumped whenever the plan a model builds into can change (the tuning is per convolution).
pub const FORMAT: u32 = 9;
const MAGIC: &[u8] = b"torchpipe-rs gpu cache\n";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Key {
    pub onnx_sha256: String,
    pub device: String,
    /// cudnnGetVersion(): algorithm ids and their speed are only meaningful for one version.
    pub cudnn: usize,
    /// cublasLtGetVersion() (0 without the library): a linear layer's algorithm is an index
    /// into cuBLASLt's heuristics, which another version may order differently. Absent in
    /// older caches, so those never match.
    #[serde(default)]
    pub cublas_lt: usize,
    pub precision: Precision,
    /// Of the engine's kernel source: the cached PTX must be what this build would compile
    /// (a kernel's arguments may have changed). Absent in older caches, so those never match.
    #[serde(default)]
    pub kernels_sha256: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Header {
    pub format: u32,
    pub key: Key,
    pub ptx: String,
    /// batch size → one algorithm per convolution, in plan order.
    pub tuning: BTreeMap<usize, Vec<Algo>>,
    /// cuDNN's JSON of the graph-API plans: (convolution, batch size, plan).
    #[serde(default)]
    pub plans: Vec<(usize, usize, String)>,
}

/// Why a cache file cannot be used (start-up then rebuilds it and logs this).
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("no cache file yet")]
    Absent,
    // Not a `source`: the log line shows this message alone, so it carries the cause.
    #[error("unreadable: {0}")]
    Unreadable(std::io::Error),
    #[error("not a torchpipe-rs GPU cache")]
    NotACache,
    #[error("truncated header")]
    TruncatedHeader,
    #[error("corrupt header: {0}")]
    CorruptHeader(serde_json::Error),
    #[error("written in format {0}, this build reads {FORMAT}")]
    Format(u32),
    #[error("the ONNX file changed (its SHA-256 differs)")]
    ModelChanged,
    #[error("tuned on {cached}, this is {this}")]
    Device { cached: String, this: String },
    #[error("tuned with cuDNN {cached}, this is {this}")]
    Cudnn { cached: usize, this: usize },
    #[error("tuned with cuBLASLt {cached}, this is {this}")]
    CublasLt { cached: usize, this: usize },
    #[error("built for {}, the node asks for {}", .cached.name(), .wanted.name())]
    Precision {
        cached: Precision,
        wanted: Precision,
    },
    #[error("written by a build with other GPU kernels")]
    Kernels,
}

#[derive(Debug)]
pub struct CacheFile {
    pub header: Header,
    pub weights: Vec<u8>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let mut s = Sha256Stream::default();
    s.update(bytes);
    s.hex()
}

/// SHA-256 over bytes given in pieces (a model file, then its external data files).
#[derive(Default)]
pub struct Sha256Stream(Sha256);

impl Sha256Stream {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub fn hex(self) -> String {
        self.0
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl CacheFile {
    /// Reads a cache valid for `key`; the error says why it cannot be used.
    pub fn read(path: &Path, key: &Key) -> Result<CacheFile, CacheError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(CacheError::Absent),
            Err(e) => return Err(CacheError::Unreadable(e)),
        };
        let rest = bytes.strip_prefix(MAGIC).ok_or(CacheError::NotACache)?;
        let (len, rest) = rest
            .split_at_checked(8)
            .ok_or(CacheError::TruncatedHeader)?;
        let len =
            u64::from_le_bytes(len.try_into().map_err(|_| CacheError::TruncatedHeader)?) as usize;
        let (json, weights) = rest
            .split_at_checked(len)
            .ok_or(CacheError::TruncatedHeader)?;
        let header: Header = serde_json::from_slice(json).map_err(CacheError::CorruptHeader)?;
        if header.format != FORMAT {
            return Err(CacheError::Format(header.format));
        }
        let k = &header.key;
        if k.onnx_sha256 != key.onnx_sha256 {
            return Err(CacheError::ModelChanged);
        }
        if k.device != key.device {
            return Err(CacheError::Device {
                cached: k.device.clone(),
                this: key.device.clone(),
            });
        }
        if k.cudnn != key.cudnn {
            return Err(CacheError::Cudnn {
                cached: k.cudnn,
                this: key.cudnn,
            });
        }
        if k.cublas_lt != key.cublas_lt {
            return Err(CacheError::CublasLt {
                cached: k.cublas_lt,
                this: key.cublas_lt,
            });
        }
        if k.precision != key.precision {
            return Err(CacheError::Precision {
                cached: k.precision,
                wanted: key.precision,
            });
        }
        if k.kernels_sha256 != key.kernels_sha256 {
            return Err(CacheError::Kernels);
        }
        Ok(CacheFile {
            header,
            weights: weights.to_vec(),
        })
    }

    /// Writes atomically (temporary file, then rename), so a concurrent reader never sees half.
    pub fn write(path: &Path, header: &Header, weights: &[u8]) -> std::io::Result<()> {
        let json = serde_json::to_vec(header).map_err(std::io::Error::other)?;
        onnx_front::files::write_atomically(path, |f| {
            f.write_all(MAGIC)?;
            f.write_all(&(json.len() as u64).to_le_bytes())?;
            f.write_all(&json)?;
            f.write_all(weights)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key {
            onnx_sha256: sha256_hex(b"model"),
            device: "NVIDIA H100 80GB HBM3".into(),
            cudnn: 91000,
            cublas_lt: 130100,
            precision: Precision::Fp16,
            kernels_sha256: sha256_hex(b"kernels"),
        }
    }

    #[test]
    fn round_trip_and_every_mismatch_is_named() {
        let dir = std::env::temp_dir().join(format!("tp-cache-{}", std::process::id()));
        let path = dir.join("m.cache");
        let mut tuning = BTreeMap::new();
        tuning.insert(
            4,
            vec![Algo {
                mode: super::super::conv::Mode::Graph,
                algo: 1,
                workspace: 4096,
            }],
        );
        let header = Header {
            format: FORMAT,
            key: key(),
            ptx: "// ptx".into(),
            tuning,
            plans: vec![(0, 4, "{}".into())],
        };
        CacheFile::write(&path, &header, &[1, 2, 3]).unwrap();
        let back = CacheFile::read(&path, &key()).unwrap();
        assert_eq!(back.weights, vec![1, 2, 3]);
        assert_eq!(back.header.tuning, header.tuning);
        assert_eq!(back.header.ptx, "// ptx");

        // What the start-up log says about a cache it rebuilds.
        let why = |path: &Path, key: &Key| CacheFile::read(path, key).unwrap_err().to_string();
        let mut other = key();
        other.onnx_sha256 = sha256_hex(b"other");
        assert!(why(&path, &other).contains("ONNX"));
        let mut other = key();
        other.device = "NVIDIA A100".into();
        assert!(why(&path, &other).contains("A100"));
        let mut other = key();
        other.precision = Precision::Fp32;
        assert!(why(&path, &other).contains("fp32"));
        let mut other = key();
        other.cudnn = 90100;
        assert!(why(&path, &other).contains("cuDNN"));
        let mut other = key();
        other.cublas_lt = 130000;
        assert!(why(&path, &other).contains("cuBLASLt"));
        let mut other = key();
        other.kernels_sha256 = sha256_hex(b"other kernels");
        assert!(why(&path, &other).contains("kernels"));

        std::fs::write(&path, b"garbage").unwrap();
        assert!(why(&path, &key()).contains("not a"));
        assert!(why(&dir.join("absent"), &key()).contains("no cache"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
