//! GPU values that cross GPUs. With `device_id` a node's instances may run on another GPU than
//! the node before it (DecodeTensor on GPU 0, the model on GPUs 0 and 1): a value that arrives
//! on another GPU is copied to the instance's, peer to peer. A value already there is used as
//! it is, so a single-GPU pipeline never copies. (One value between two GPUs: a plain peer
//! copy, never NVLink multicast.)

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use cudarc::driver::{sys as cu, CudaContext, CudaStream};

use super::cuda::{self, Call, Result};
use super::pool;
use crate::item::{DeviceMemory, DeviceValue, Item, Value};

/// For each of `values`: `None` when it is on `stream`'s GPU already (use it as it is), else a
/// copy on that GPU, from the pool. The copies are complete when this returns, as every GPU
/// value is when a backend hands it on; the sources must be too (their producers synchronise).
pub fn copy_here(values: &[&DeviceValue], stream: &CudaStream) -> Result<Vec<Option<DeviceValue>>> {
    let dst = stream.context();
    let mut out: Vec<Option<DeviceValue>> = Vec::with_capacity(values.len());
    let enqueued = enqueue_copies(values, dst, stream, &mut out);
    // On failure too: a copy in flight must finish before its destination can go back to the
    // pool, where another value would take it.
    let synced = if out.iter().any(Option::is_some) {
        stream.synchronize().call("cuStreamSynchronize")
    } else {
        Ok(())
    };
    enqueued?;
    synced?;
    Ok(out)
}

fn enqueue_copies(
    values: &[&DeviceValue],
    dst: &Arc<CudaContext>,
    stream: &CudaStream,
    out: &mut Vec<Option<DeviceValue>>,
) -> Result<()> {
    for v in values {
        let from = v.mem.device();
        if from == dst.ordinal() {
            out.push(None);
            continue;
        }
        // The value was made on GPU `from`, so its context exists already.
        let src = cuda::context(from)?;
        if let Err(e) = enable_peer_access(dst, &src) {
            tracing::warn!(
                "GPU {} could not enable direct reads of GPU {from}'s memory ({e}); its copies \
                 go through the driver's staging instead",
                dst.ordinal()
            );
        }
        let bytes = v.mem.bytes();
        let buf = pool::shared(dst).take(bytes)?;
        dst.bind_to_thread().call("cuCtxSetCurrent")?;
        // SAFETY: `buf` is on loan to us alone, at least `bytes` in `dst`'s context; the
        // source holds `bytes` in `src`'s context and is complete (its producer synchronised);
        // both contexts are live (the registry keeps them); the source stays alive in `values`
        // and the destination in `out` until `copy_here` has synchronised the stream.
        unsafe {
            cu::cuMemcpyPeerAsync(
                buf.ptr(),
                dst.cu_ctx(),
                v.mem.ptr(),
                src.cu_ctx(),
                bytes,
                stream.cu_stream(),
            )
        }
        .result()
        .call("cuMemcpyPeerAsync")?;
        out.push(Some(DeviceValue {
            layout: v.layout.clone(),
            mem: Arc::new(buf),
        }));
    }
    Ok(())
}

/// Replaces each item's `data` that is a GPU value on another GPU than `stream`'s with a copy
/// on that GPU (`copy_here`); items already there, and host values, are left as they are.
pub fn items_here(batch: &mut [Item], stream: &CudaStream) -> Result<()> {
    let here = stream.context().ordinal();
    let foreign: Vec<(usize, DeviceValue)> = batch
        .iter()
        .enumerate()
        .filter_map(|(i, item)| match &item.data {
            Value::Device(v) if v.mem.device() != here => Some((i, v.clone())),
            _ => None,
        })
        .collect();
    if foreign.is_empty() {
        return Ok(());
    }
    let refs: Vec<&DeviceValue> = foreign.iter().map(|(_, v)| v).collect();
    let copies = copy_here(&refs, stream)?;
    for ((i, _), copy) in foreign.iter().zip(copies) {
        if let Some(copy) = copy {
            batch[*i].data = Value::Device(copy);
        }
    }
    Ok(())
}

/// Lets `dst`'s GPU read `src`'s memory directly (NVLink or PCIe), where the hardware allows
/// it; tried once per pair of GPUs. Without it a peer copy still works, staged by the driver.
fn enable_peer_access(dst: &CudaContext, src: &CudaContext) -> Result<()> {
    static TRIED: Mutex<BTreeSet<(usize, usize)>> = Mutex::new(BTreeSet::new());
    let pair = (dst.ordinal(), src.ordinal());
    if !crate::sync::lock(&TRIED).insert(pair) {
        return Ok(());
    }
    let mut can = 0;
    // SAFETY: both device handles come from live contexts; `can` is a valid out-pointer.
    unsafe { cu::cuDeviceCanAccessPeer(&mut can, dst.cu_device(), src.cu_device()) }
        .result()
        .call("cuDeviceCanAccessPeer")?;
    if can == 0 {
        tracing::info!(
            "GPU {} cannot read GPU {} directly; copies between them are staged by the driver",
            pair.0,
            pair.1
        );
        return Ok(());
    }
    dst.bind_to_thread().call("cuCtxSetCurrent")?;
    // SAFETY: the current context is `dst`'s, `src`'s context is live (the registry keeps it),
    // and the flags must be 0.
    match unsafe { cu::cuCtxEnablePeerAccess(src.cu_ctx(), 0) }.result() {
        Ok(()) => {
            tracing::info!("GPU {} reads GPU {} directly (peer access)", pair.0, pair.1);
            Ok(())
        }
        // Another part of the process enabled it first: what we wanted.
        Err(e) if e.0 == cu::CUresult::CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED => Ok(()),
        Err(e) => Err(e).call("cuCtxEnablePeerAccess"),
    }
}
