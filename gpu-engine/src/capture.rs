//! A CUDA graph captured from a model's stream, with every programmatic edge made a full one.
//!
//! Why: on the H200, resnet18's batch of 32 gave a different answer from one replay to the
//! next (relative L2 1.0e-3 against the CPU engine, then 1.5e-2) and eager runs without a
//! synchronisation between steps were off by up to 5.8e-2, while the same steps run with the
//! stream synchronised between them always agreed (model-check --replay-check, 2026-12-02).
//! Every step was a cuDNN graph-API convolution on one stream, so consecutive kernels
//! overlapped although the stream orders them. The graph showed how: 8 of its 27 edges were
//! programmatic (programmatic dependent launch lets a kernel start before the one it follows
//! has finished; a kernel that reads its predecessor's output without waiting for it races,
//! as NVIDIA/cutlass#2760 reports of SM90 GEMMs, though which kernel here does was not
//! isolated). Rewritten as ordinary edges, each kernel starts only once the one before has
//! finished and its writes are visible, as the stream's order promises, and replays agreed
//! with the synchronised run exactly. Eager enqueues (the warm-up before capture, the trace
//! and profile's runs) are not rewritten and can still overlap: only captured graphs serve.

use std::sync::Arc;

use cudarc::driver::{sys as cu, CudaStream};

use super::cuda::{Call, GpuError, Result};

/// An instantiated graph and the graph it was made from.
pub struct Captured {
    graph: cu::CUgraph,
    exec: cu::CUgraphExec,
    stream: Arc<CudaStream>,
    /// How many of the captured edges were programmatic (now full).
    pub programmatic: usize,
    pub edges: usize,
}

// SAFETY: graph handles are plain driver objects; one instance's thread launches them.
unsafe impl Send for Captured {}

impl Captured {
    /// Ends the capture begun on `stream`, makes every edge full and instantiates the graph.
    pub fn end(stream: &Arc<CudaStream>) -> Result<Captured> {
        let mut graph = std::ptr::null_mut();
        // SAFETY: the stream is capturing (the caller began it); out-pointer to the graph.
        unsafe { cu::cuStreamEndCapture(stream.cu_stream(), &mut graph) }
            .result()
            .call("cuStreamEndCapture")?;
        if graph.is_null() {
            return Err(GpuError::Plan("graph capture recorded nothing".into()));
        }
        let mut c = Captured {
            graph,
            exec: std::ptr::null_mut(),
            stream: stream.clone(),
            programmatic: 0,
            edges: 0,
        };
        c.make_edges_full()?;
        // SAFETY: a complete graph; out-pointer to its executable form.
        unsafe { cu::cuGraphInstantiateWithFlags(&mut c.exec, c.graph, 0) }
            .result()
            .call("cuGraphInstantiate")?;
        Ok(c)
    }

    fn make_edges_full(&mut self) -> Result<()> {
        let mut n = 0usize;
        // SAFETY: null arrays ask for the edge count only.
        unsafe {
            cu::cuGraphGetEdges_v2(
                self.graph,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                &mut n,
            )
        }
        .result()
        .call("cuGraphGetEdges")?;
        let mut from = vec![std::ptr::null_mut(); n];
        let mut to = vec![std::ptr::null_mut(); n];
        // SAFETY: a plain C struct of bytes; zero is the default edge.
        let mut data: Vec<cu::CUgraphEdgeData> = vec![unsafe { std::mem::zeroed() }; n];
        // SAFETY: the three arrays hold n entries, the count the driver just gave.
        unsafe {
            cu::cuGraphGetEdges_v2(
                self.graph,
                from.as_mut_ptr(),
                to.as_mut_ptr(),
                data.as_mut_ptr(),
                &mut n,
            )
        }
        .result()
        .call("cuGraphGetEdges")?;
        self.edges = n;
        // SAFETY: a plain C struct of bytes; all zeros is the full (default) dependency.
        let full: cu::CUgraphEdgeData = unsafe { std::mem::zeroed() };
        let n = n.min(from.len());
        let is_full = |d: &cu::CUgraphEdgeData| {
            d.type_ == cu::CUgraphDependencyType::CU_GRAPH_DEPENDENCY_TYPE_DEFAULT as u8
                && d.from_port == 0
                && d.to_port == 0
        };
        // Pairs already joined by a full edge: the driver refuses a second one.
        let mut joined: std::collections::HashSet<(usize, usize)> = (0..n)
            .filter(|&i| is_full(&data[i]))
            .map(|i| (from[i] as usize, to[i] as usize))
            .collect();
        for i in 0..n {
            if is_full(&data[i]) {
                continue;
            }
            let pair = (from[i] as usize, to[i] as usize);
            // SAFETY: (from[i], to[i], data[i]) is an edge of this graph, as the driver listed
            // it; the replacement joins the same two nodes.
            unsafe {
                cu::cuGraphRemoveDependencies_v2(self.graph, &from[i], &to[i], &data[i], 1)
                    .result()
                    .call("cuGraphRemoveDependencies")?;
                if joined.insert(pair) {
                    cu::cuGraphAddDependencies_v2(self.graph, &from[i], &to[i], &full, 1)
                        .result()
                        .call("cuGraphAddDependencies")?;
                }
            }
            self.programmatic += 1;
        }
        Ok(())
    }

    pub fn upload(&self) -> Result<()> {
        // SAFETY: an instantiated graph of this stream's context.
        unsafe { cu::cuGraphUpload(self.exec, self.stream.cu_stream()) }
            .result()
            .call("cuGraphUpload")
    }

    pub fn launch(&self) -> Result<()> {
        // SAFETY: as for upload; the buffers the graph reads and writes live as long as the
        // instance that owns it.
        unsafe { cu::cuGraphLaunch(self.exec, self.stream.cu_stream()) }
            .result()
            .call("cuGraphLaunch")
    }
}

impl Drop for Captured {
    fn drop(&mut self) {
        // SAFETY: each handle was created once here (or is null and skipped), destroyed once.
        unsafe {
            if !self.exec.is_null() {
                cu::cuGraphExecDestroy(self.exec);
            }
            cu::cuGraphDestroy(self.graph);
        }
    }
}
