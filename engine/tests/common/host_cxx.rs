//! GPU kernels compiled for the host as a program: the kernel source between a prelude (CUDA's
//! qualifiers defined away, its intrinsics as the same IEEE operations) and a `main` that reads a
//! header line and raw input on stdin, runs the grid thread by thread and writes the output to
//! stdout. Shared by the integration tests (tests/resize_kernel_host.rs) and the unit tests of
//! the backends whose kernels they check (src/backends/detect/yolo_kernel_tests.rs).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What every kernel program starts with: the headers, CUDA's qualifiers defined away, and the
/// grid's coordinates as globals the program's `main` sets.
const CUDA_ON_THE_HOST: &str = r#"
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <math.h>
#include <vector>
using std::max;
using std::min;
#define __device__
#define __global__
#define __forceinline__ inline
#define __restrict__
struct Dim3 { unsigned x, y, z; };
static Dim3 blockIdx, blockDim, threadIdx;
"#;

/// The common prelude, then `prelude` (the intrinsics the kernel uses), the file `kernel`
/// (relative to the repository's root) and `main`, compiled with the system C++ compiler, without FMA contraction or fast math (the roundings of the kernels' `_rn`
/// intrinsics), into a fresh folder named after `name`.
pub fn compile_program(name: &str, prelude: &str, kernel: &str, main: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("torchpipe-rs-{name}-{}-{k}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let source = std::fs::read_to_string(root.join(kernel)).unwrap();
    let src = dir.join("kernel.cpp");
    std::fs::write(
        &src,
        format!("{CUDA_ON_THE_HOST}\n{prelude}\n{source}\n{main}"),
    )
    .unwrap();
    let exe = dir.join("kernel");
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let out = Command::new(&cxx)
        .args(["-O2", "-ffp-contract=off", "-fno-fast-math", "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C++ compiler `{cxx}`: {e}"));
    assert!(
        out.status.success(),
        "{kernel} does not compile for the host:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// Runs a compiled program: `header` as the first line of its input, then `input`; its output.
pub fn run_program(exe: &Path, header: &str, input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(exe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{header}").unwrap();
        stdin.write_all(input).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "kernel run failed: {:?}", out.status);
    out.stdout
}
