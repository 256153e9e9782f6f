//! A GPU result handed to Python without a copy: `DeviceArray` implements the DLPack protocol
//! (`__dlpack__`, `__dlpack_device__`), so `torch.from_dlpack(x)` (or CuPy's, JAX's) makes a
//! CUDA tensor over the engine's memory. The memory stays the engine's, kept alive by the
//! capsule's share of it until the consumer's tensor is freed.

use std::ffi::{c_void, CStr};
use std::sync::Arc;

use engine::{DeviceLayout, DeviceMemory, DeviceValue};
use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::prelude::*;

/// The DLPack ABI (dlpack.h, the unversioned `DLManagedTensor` every consumer accepts).
#[repr(C)]
struct DLDevice {
    device_type: i32,
    device_id: i32,
}

#[derive(Clone, Copy)]
#[repr(C)]
struct DLDataType {
    code: u8,
    bits: u8,
    lanes: u16,
}

#[repr(C)]
struct DLTensor {
    data: *mut c_void,
    device: DLDevice,
    ndim: i32,
    dtype: DLDataType,
    shape: *mut i64,
    /// Null: compact row-major, which every layout here is.
    strides: *mut i64,
    byte_offset: u64,
}

#[repr(C)]
struct DLManagedTensor {
    dl_tensor: DLTensor,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DLManagedTensor)>,
}

const KDL_CUDA: i32 = 2;
const KDL_UINT: u8 = 1;
const KDL_FLOAT: u8 = 2;
const CAPSULE_NAME: &CStr = c"dltensor";

/// What a capsule owns: the tensor header (first, so a pointer to this is a pointer to it),
/// the shape it points into, and a share of the memory.
#[repr(C)]
struct Managed {
    tensor: DLManagedTensor,
    shape: Vec<i64>,
    _mem: Arc<dyn DeviceMemory>,
}

/// Called by the consumer when its tensor is freed, or by the capsule's destructor when no
/// consumer took it; from any thread, without the GIL (it only drops Rust values).
unsafe extern "C" fn delete_managed(t: *mut DLManagedTensor) {
    if !t.is_null() {
        // SAFETY: `t` is the `Box<Managed>` leaked in `__dlpack__` (`tensor` is its first
        // field of a repr(C) struct), and DLPack calls the deleter exactly once.
        drop(unsafe { Box::from_raw(t.cast::<Managed>()) });
    }
}

/// A capsule still named "dltensor" was never consumed (a consumer renames it
/// "used_dltensor" when it takes ownership): then its tensor is ours to free.
unsafe extern "C" fn capsule_destructor(capsule: *mut ffi::PyObject) {
    // SAFETY: called by Python with the capsule being destroyed; IsValid checks the name
    // without raising, and GetPointer is only asked for the name it has.
    unsafe {
        if ffi::PyCapsule_IsValid(capsule, CAPSULE_NAME.as_ptr()) == 1 {
            let p = ffi::PyCapsule_GetPointer(capsule, CAPSULE_NAME.as_ptr());
            delete_managed(p.cast::<DLManagedTensor>());
        }
    }
}

/// A value the pipeline left on the GPU (a decoded image, a preprocessed tensor): take it with
/// `torch.from_dlpack(x)`, no copy made. `pipe(..., result_type="torch")` does that itself.
#[pyclass(frozen, module = "torchpipe_rs._native")]
pub struct DeviceArray {
    value: DeviceValue,
    shape: Vec<usize>,
    dtype: DLDataType,
}

impl DeviceArray {
    pub fn new(value: DeviceValue) -> Result<DeviceArray, String> {
        let (shape, dtype, elem) = match &value.layout {
            DeviceLayout::Image {
                height,
                width,
                channels,
            } => (vec![*height, *width, *channels], (KDL_UINT, 8), 1),
            DeviceLayout::Tensor { shape } => (shape.clone(), (KDL_FLOAT, 32), 4),
        };
        let need = shape.iter().product::<usize>() * elem;
        // A consumer reads every byte the shape describes: never more than the value owns.
        if need > value.mem.bytes() {
            return Err(format!(
                "a GPU value of shape {shape:?} needs {need} bytes, its memory holds {}",
                value.mem.bytes()
            ));
        }
        Ok(DeviceArray {
            value,
            shape,
            dtype: DLDataType {
                code: dtype.0,
                bits: dtype.1,
                lanes: 1,
            },
        })
    }
}

#[pymethods]
impl DeviceArray {
    #[getter]
    fn shape(&self) -> Vec<usize> {
        self.shape.clone()
    }

    #[getter]
    fn dtype(&self) -> &'static str {
        if self.dtype.code == KDL_UINT {
            "uint8"
        } else {
            "float32"
        }
    }

    /// The CUDA device index the memory is on.
    #[getter]
    fn device(&self) -> usize {
        self.value.mem.device()
    }

    fn __dlpack_device__(&self) -> (i32, i32) {
        (KDL_CUDA, self.device_id())
    }

    /// The DLPack capsule. The engine synchronised the stream that wrote the memory before
    /// handing the value on, so the data is ready on any `stream` the consumer names.
    #[pyo3(signature = (*, stream = None, max_version = None, dl_device = None, copy = None))]
    fn __dlpack__<'py>(
        &self,
        py: Python<'py>,
        stream: Option<&Bound<'py, PyAny>>,
        max_version: Option<&Bound<'py, PyAny>>,
        dl_device: Option<(i32, i32)>,
        copy: Option<bool>,
    ) -> PyResult<Bound<'py, PyAny>> {
        // Ready on every stream; a versioned capsule is optional, so the legacy one is given
        // whatever `max_version` the consumer accepts.
        let _ = (stream, max_version);
        if copy == Some(true) {
            return Err(PyBufferError::new_err(
                "this GPU value is exported without a copy only (copy=True asked for one)",
            ));
        }
        if let Some(d) = dl_device {
            if d != (KDL_CUDA, self.device_id()) {
                return Err(PyBufferError::new_err(format!(
                    "this value is on CUDA device {}; dl_device {d:?} asks for another",
                    self.device_id()
                )));
            }
        }
        let mut managed = Box::new(Managed {
            tensor: DLManagedTensor {
                dl_tensor: DLTensor {
                    data: self.value.mem.ptr() as *mut c_void,
                    device: DLDevice {
                        device_type: KDL_CUDA,
                        device_id: self.device_id(),
                    },
                    ndim: self.shape.len() as i32,
                    dtype: self.dtype,
                    shape: std::ptr::null_mut(),
                    strides: std::ptr::null_mut(),
                    byte_offset: 0,
                },
                manager_ctx: std::ptr::null_mut(),
                deleter: Some(delete_managed),
            },
            shape: self.shape.iter().map(|&d| d as i64).collect(),
            _mem: self.value.mem.clone(),
        });
        // The Vec's buffer does not move when the Box does.
        managed.tensor.dl_tensor.shape = managed.shape.as_mut_ptr();
        let raw = Box::into_raw(managed);
        // SAFETY: `raw` is a valid leaked Box whose first field is the DLManagedTensor; the
        // capsule's destructor or the consumer frees it exactly once (see above).
        unsafe {
            let capsule = ffi::PyCapsule_New(
                raw.cast::<c_void>(),
                CAPSULE_NAME.as_ptr(),
                Some(capsule_destructor),
            );
            if capsule.is_null() {
                delete_managed(raw.cast::<DLManagedTensor>());
            }
            Bound::from_owned_ptr_or_err(py, capsule)
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "DeviceArray(shape={:?}, dtype={}, device=cuda:{})",
            self.shape,
            self.dtype(),
            self.device()
        )
    }
}

impl DeviceArray {
    fn device_id(&self) -> i32 {
        i32::try_from(self.value.mem.device()).unwrap_or(i32::MAX)
    }
}
