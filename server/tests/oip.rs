//! The Open Inference Protocol endpoints (`--http-port`, `--grpc-port`) through Triton's own
//! tools, as a user moving from Triton points them at us: `tritonclient[http]` and
//! `tritonclient[grpc]` classify the test photos with the classes and probabilities the Thrift
//! `infer_batch` gives on the same server, one photo a request and all in one; malformed
//! requests get the protocol's errors and the server keeps serving; `perf_analyzer` drives both
//! endpoints with no errors. scripts/setup installs the
//! tools into target/oip-tools (tritonclient 2.40.0's wheel carries perf_analyzer; it loads
//! Debian's libb64 and the CUDA runtime from PyPI, and needs no GPU over HTTP).

mod common;

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value as Json;
use serve_thrift::serve::TInferenceServiceSyncClient;
use serve_thrift::InferenceParams;

fn tools() -> PathBuf {
    common::repo_root().join("target/oip-tools/venv")
}

fn tool_python() -> PathBuf {
    let python = tools().join("bin/python");
    assert!(
        python.exists(),
        "{} missing: scripts/setup installs tritonclient there",
        python.display()
    );
    python
}

/// The seed TOML served on Thrift, HTTP and gRPC, its entry node's model named `resnet50`
/// (`model_name`); the two protocol ports.
fn serve() -> (common::Server, u16, u16) {
    let config = common::config_copy(
        "resnet50.toml",
        &[("[cpu_decoder]", "[cpu_decoder]\nmodel_name = \"resnet50\"")],
    );
    serve_config(&config)
}

/// `config` served on Thrift, HTTP and gRPC; the two protocol ports.
fn serve_config(config: &std::path::Path) -> (common::Server, u16, u16) {
    let (http, grpc) = (common::free_port(), common::free_port());
    let server = common::Server::start(&[
        "--toml",
        config.to_str().unwrap(),
        "--http-port",
        &http.to_string(),
        "--grpc-port",
        &grpc.to_string(),
    ]);
    (server, http, grpc)
}

#[test]
fn tritonclient_classifies_as_infer_batch_does_and_bad_requests_get_errors() {
    let (server, http, grpc) = serve();
    let images: Vec<String> = common::test_images()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let script = common::repo_root().join("server/tests/py/oip_client.py");
    let out = Command::new(tool_python())
        .arg(&script)
        .arg(format!("127.0.0.1:{http}"))
        .arg(format!("127.0.0.1:{grpc}"))
        .arg("resnet50")
        .args(&images)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "oip_client.py failed:\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    let r: Json = serde_json::from_slice(&out.stdout).unwrap();

    assert_eq!(r["live"], true);
    assert_eq!(r["ready"], true);
    assert_eq!(r["model_ready"], true);
    let extensions = r["server"]["extensions"].as_array().unwrap();
    for e in [
        "binary_tensor_data",
        "classification",
        "model_configuration",
    ] {
        assert!(
            extensions.iter().any(|x| x == e),
            "{e} not in {extensions:?}"
        );
    }
    assert_eq!(r["model"]["inputs"][0]["datatype"], "BYTES");
    assert_eq!(r["config"]["max_batch_size"], 256);
    let g = &r["grpc"];
    assert_eq!(g["live"], true);
    assert_eq!(g["ready"], true);
    assert_eq!(g["model_ready"], true);
    assert_eq!(g["server"]["extensions"], r["server"]["extensions"]);
    assert_eq!(g["model"]["inputs"][0]["datatype"], "BYTES");
    assert_eq!(g["config"]["config"]["max_batch_size"], 256);

    // The Thrift answer for each photo on the same server.
    let mut thrift = common::client(server.port);
    for (i, path) in images.iter().enumerate() {
        let jpeg = std::fs::read(path).unwrap();
        let want = thrift
            .infer_batch(InferenceParams::new(format!("t{i}"), jpeg))
            .unwrap();
        let want_score = want.score.into_inner();
        for (proto, how) in [
            ("http", "one_by_one"),
            ("http", "batch"),
            ("grpc", "one_by_one"),
            ("grpc", "batch"),
        ] {
            let got = if proto == "http" {
                &r[how][i]
            } else {
                &g[how][i]
            };
            let how = format!("{proto} {how}");
            assert_eq!(got["index"].to_string(), want.label, "{how} {path}");
            assert_eq!(got["argmax"], got["index"], "{how} {path}: logits' arg-max");
            assert_eq!(got["classes"], 1000);
            // "%.6f", as Triton writes the classification's value.
            let prob = got["prob"].as_f64().unwrap();
            assert!(
                (prob - want_score).abs() <= 5e-7 + 1e-6 * want_score.abs(),
                "{how} {path}: {prob} against infer_batch's {want_score}"
            );
        }
    }
    let stats = &r["stats"]["model_stats"][0];
    assert_eq!(stats["name"], "resnet50");
    // One request of each kind per photo, plus the batched two; each image counted.
    let n = images.len() as u64;
    assert_eq!(stats["inference_count"], 4 * n);
    assert_eq!(stats["execution_count"], 2 * n + 2);
    // gRPC's JSON writes 64-bit counts as strings. Its requests count into the same model:
    // HTTP's 4n, its two after the malformed ones, then gRPC's own 4n.
    let gstats = &g["stats"]["model_stats"][0];
    assert_eq!(gstats["inference_count"], (8 * n + 2).to_string());

    let bad = &r["bad"];
    let expect = [
        ("bad_json", 400, "JSON cannot be read"),
        ("wrong_datatype", 400, "datatype BYTES"),
        ("wrong_shape", 400, "shape [N] or [N, 1]"),
        ("size_past_body", 400, "past the body's end"),
        (
            "header_past_body",
            400,
            "Inference-Header-Content-Length is 1000 bytes",
        ),
        ("not_an_image", 400, "not a JPEG, PNG or BMP image"),
        ("unknown_output", 400, "unknown output `PROBS`"),
        (
            "unknown_model",
            404,
            "no model `no_such_model`; this server has resnet50",
        ),
    ];
    for (case, status, text) in expect {
        assert_eq!(bad[case]["status"], status, "{case}: {}", bad[case]);
        let error = bad[case]["error"].as_str().unwrap_or_default();
        assert!(error.contains(text), "{case}: {error}");
    }
    let gbad = &g["bad"];
    let expect = [
        ("wrong_datatype", "INVALID_ARGUMENT", "datatype BYTES"),
        ("wrong_shape", "INVALID_ARGUMENT", "shape [N] or [N, 1]"),
        (
            "not_an_image",
            "INVALID_ARGUMENT",
            "not a JPEG, PNG or BMP image",
        ),
        (
            "unknown_output",
            "INVALID_ARGUMENT",
            "unknown output `PROBS`",
        ),
        ("unknown_model", "NOT_FOUND", "no model `no_such_model`"),
    ];
    for (case, status, text) in expect {
        let got = gbad[case]["status"].as_str().unwrap_or_default();
        assert!(got.ends_with(status), "grpc {case}: {}", gbad[case]);
        let error = gbad[case]["error"].as_str().unwrap_or_default();
        assert!(error.contains(text), "grpc {case}: {error}");
    }
    let after = {
        let jpeg = std::fs::read(&images[0]).unwrap();
        thrift
            .infer_batch(InferenceParams::new("after".into(), jpeg))
            .unwrap()
            .label
    };
    assert_eq!(r["after"]["index"].to_string(), after);
    assert_eq!(g["after"]["index"].to_string(), after);
    let (status, log) = server.stop();
    assert!(status.success(), "server exit {status}: {log}");
}

#[test]
fn perf_analyzer_drives_both_endpoints_without_errors() {
    let (server, http, grpc) = serve();
    // perf_analyzer's BYTES input data: each element base64 of its serialised form (a
    // little-endian u32 length, then the bytes), as its docs describe.
    let jpeg = std::fs::read(common::repo_root().join("benches/imgs/chelsea.jpg")).unwrap();
    let data = common::temp_dir("perf-analyzer").join("input.json");
    let script = "import base64, json, struct, sys\n\
                  d = open(sys.argv[1], 'rb').read()\n\
                  e = base64.b64encode(struct.pack('<I', len(d)) + d).decode()\n\
                  json.dump({'data': [{'INPUT': {'content': {'b64': e}, 'shape': [1]}}]}, open(sys.argv[2], 'w'))\n";
    let jpeg_path = common::temp_dir("perf-analyzer").join("chelsea.jpg");
    std::fs::write(&jpeg_path, jpeg).unwrap();
    let made = Command::new(tool_python())
        .args(["-c", script])
        .arg(&jpeg_path)
        .arg(&data)
        .status()
        .unwrap();
    assert!(made.success());
    let cudart = std::fs::read_dir(tools().join("lib"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|d| d.path().join("site-packages/nvidia/cuda_runtime/lib"))
        .find(|p| p.exists())
        .expect("nvidia-cuda-runtime-cu12 in target/oip-tools (scripts/setup)");
    for (protocol, port) in [("http", http), ("grpc", grpc)] {
        let out = Command::new(tools().join("bin/perf_analyzer"))
            .env("LD_LIBRARY_PATH", &cudart)
            .args(["-m", "resnet50", "-i", protocol, "-u"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--input-data")
            .arg(&data)
            .args([
                "--concurrency-range",
                "2",
                "--measurement-interval",
                "2000",
                "--max-trials",
                "3",
                "--stability-percentage",
                "100",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "perf_analyzer -i {protocol} failed:\n{text}\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            server.log()
        );
        let count = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Request count: "))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no request count in:\n{text}"));
        assert!(count > 0, "{protocol}: {text}");
        // The server's side of perf_analyzer's report: the statistics extension.
        assert!(
            text.contains("Successful request count"),
            "{protocol}: {text}"
        );
    }
    let (status, log) = server.stop();
    assert!(status.success(), "server exit {status}: {log}");
    assert!(!log.contains("ERROR"), "{log}");
}

/// A body past `--max-message-bytes` is refused before it is read whole, with the protocol's
/// error shape, and the server goes on serving.
#[test]
fn a_body_past_the_message_limit_gets_413_in_the_protocols_shape() {
    use std::io::{Read, Write};
    let config = common::config_copy("resnet50.toml", &[]);
    let http = common::free_port();
    let server = common::Server::start(&[
        "--toml",
        config.to_str().unwrap(),
        "--http-port",
        &http.to_string(),
        "--max-message-bytes",
        "4096",
    ]);
    let post = |len: usize| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", http)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let head = format!(
            "POST /v2/models/cpu_decoder/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Content-Length: {len}\r\n\r\n"
        );
        s.write_all(head.as_bytes()).unwrap();
        // The server may answer and close before the whole body is sent.
        let _ = s.write_all(&vec![b' '; len]);
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        String::from_utf8_lossy(&raw).into_owned()
    };
    let reply = post(100_000);
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    let body = reply.split("\r\n\r\n").nth(1).unwrap_or_default();
    let error: Json = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert!(
        error["error"].as_str().unwrap_or_default().contains("body"),
        "{error}"
    );
    // Under the limit, the same empty body is a JSON error of its own: the server still serves.
    let reply = post(10);
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(reply.contains("JSON cannot be read"), "{reply}");
    let (status, log) = server.stop();
    assert!(status.success(), "server exit {status}: {log}");
}

/// Three entry nodes on one server, each a model that takes what its first backend reads:
/// `jpeg` (DecodeMat: BYTES), `pixels` (ResizeMat: UINT8 `[N, h, w, 3]`) and `tensor`
/// (TensorrtTensor: FP32 `[N, 3, 224, 224]`), the same classifier behind each.
fn typed_inputs_config() -> PathBuf {
    let model = common::models_dir().join("tiny_cnn.onnx");
    let classifier = format!(
        "backend = \"TensorrtTensor\"\ndevice = \"cpu\"\nmodel = \"{}\"\nmean = \"{MEAN}\"\n\
         std = \"{STD}\"\n",
        model.display()
    );
    let prep = "backend = \"Sequential[ResizeMat,cvtColorMat,Mat2Tensor]\"\nresize_h = 224\n\
                resize_w = 224\ncolor = \"rgb\"\n";
    let toml = format!(
        "batching_timeout = 1\n\n[jpeg]\nbackend = \"DecodeMat\"\nnext = \"jpeg_prep\"\n\n\
         [jpeg_prep]\n{prep}next = \"jpeg_model\"\n\n[jpeg_model]\n{classifier}\n\
         [pixels]\n{prep}next = \"pixels_model\"\n\n[pixels_model]\n{classifier}\n\
         [tensor]\n{classifier}"
    );
    let path = common::temp_dir("oip-typed").join("typed.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

const MEAN: &str = "123.675, 116.28, 103.53";
const STD: &str = "58.395, 57.120, 57.375";

fn floats(v: &Json) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// Largest difference between two rows, relative to the reference's largest magnitude.
fn relative_difference(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    got.iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
        / scale
}

#[test]
fn decoded_images_and_model_inputs_go_to_the_entry_nodes_that_take_them() {
    let (server, http, grpc) = serve_config(&typed_inputs_config());
    // The references: OpenCV's decode and resize, onnxruntime's logits (system Python).
    let photos: Vec<PathBuf> = common::test_images().into_iter().take(3).collect();
    let dir = common::temp_dir("oip-typed-ref");
    for (i, p) in photos.iter().enumerate() {
        std::fs::copy(p, dir.join(format!("image-{i}"))).unwrap();
    }
    let model = common::models_dir().join("tiny_cnn.onnx");
    let mut args = vec![
        model.to_str().unwrap().to_string(),
        MEAN.to_string(),
        STD.to_string(),
        dir.to_str().unwrap().to_string(),
    ];
    args.extend(photos.iter().map(|p| p.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    common::python_script(
        &common::repo_root().join("server/tests/py/oip_inputs_ref.py"),
        &args,
    );
    let out = Command::new(tool_python())
        .arg(common::repo_root().join("server/tests/py/oip_inputs.py"))
        .arg(format!("127.0.0.1:{http}"))
        .arg(format!("127.0.0.1:{grpc}"))
        .arg(&dir)
        .arg(photos.len().to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "oip_inputs.py failed:\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    let r: Json = serde_json::from_slice(&out.stdout).unwrap();
    let npy_logits = |i: usize| -> Vec<f32> {
        // numpy's .npy v1: a header padded to 64 bytes' multiple, then the little-endian f32.
        let bytes = std::fs::read(dir.join(format!("logits-{i}.npy"))).unwrap();
        let header = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        bytes[10 + header..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    for proto in ["http", "grpc"] {
        let p = &r[proto];
        let meta = &p["meta"];
        assert_eq!(meta["jpeg"]["datatype"], "BYTES", "{proto}");
        assert_eq!(meta["pixels"]["datatype"], "UINT8", "{proto}");
        assert_eq!(meta["pixels"]["shape"], serde_json::json!([-1, -1, -1, 3]));
        assert_eq!(meta["tensor"]["datatype"], "FP32", "{proto}");
        assert_eq!(
            meta["tensor"]["shape"],
            serde_json::json!([-1, 3, 224, 224])
        );
        for (i, photo) in photos.iter().enumerate() {
            let want = npy_logits(i);
            // Our decode and resize equal OpenCV's on these photos, so each input gives
            // onnxruntime's logits within fp32 rounding (measured: 4.4e-7 of the largest).
            let rows = [
                ("FP32", &p["tensor"][i]),
                ("FP32 in one request", &p["tensor_batch"][i]),
                ("UINT8", &p["pixels"][i]),
                ("BYTES", &p["jpeg"][i]),
            ];
            for (input, row) in rows {
                let d = relative_difference(&floats(row), &want);
                assert!(d < 1e-5, "{proto} {} {input}: {d}", photo.display());
            }
        }
        for (case, text) in [
            ("uint8_to_jpeg", "takes input `INPUT` of datatype BYTES"),
            ("bytes_to_pixels", "takes input `INPUT` of datatype UINT8"),
            ("wrong_tensor_shape", "takes input `INPUT` of datatype FP32"),
        ] {
            let e = p[case].as_str().unwrap_or_default();
            assert!(e.contains(text), "{proto} {case}: {e}");
        }
    }
    let (status, log) = server.stop();
    assert!(status.success(), "server exit {status}: {log}");
}
