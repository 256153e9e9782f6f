//! The engine's two precisions and what each means for cuDNN.

use cudarc::cudnn::sys as dnn;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Precision {
    Fp16,
    Fp32,
}

impl Precision {
    pub(super) fn bytes(self) -> usize {
        match self {
            Precision::Fp16 => 2,
            Precision::Fp32 => 4,
        }
    }

    pub(super) fn dtype(self) -> dnn::cudnnDataType_t {
        match self {
            Precision::Fp16 => dnn::cudnnDataType_t::CUDNN_DATA_HALF,
            Precision::Fp32 => dnn::cudnnDataType_t::CUDNN_DATA_FLOAT,
        }
    }

    /// fp16 runs NHWC (what the tensor-core kernels read); fp32 runs NCHW on FMA kernels,
    /// so that it stays a true fp32 reference (no TF32).
    pub(super) fn format(self) -> dnn::cudnnTensorFormat_t {
        match self {
            Precision::Fp16 => dnn::cudnnTensorFormat_t::CUDNN_TENSOR_NHWC,
            Precision::Fp32 => dnn::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
        }
    }

    pub(super) fn math(self) -> dnn::cudnnMathType_t {
        match self {
            Precision::Fp16 => dnn::cudnnMathType_t::CUDNN_TENSOR_OP_MATH,
            Precision::Fp32 => dnn::cudnnMathType_t::CUDNN_FMA_MATH,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp16 => "fp16",
            Precision::Fp32 => "fp32",
        }
    }
}

impl Precision {
    /// Raw device values of this precision (little-endian) as f32.
    pub(super) fn to_f32(self, raw: &[u8]) -> Vec<f32> {
        match self {
            Precision::Fp16 => raw
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Precision::Fp32 => raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        }
    }
}
