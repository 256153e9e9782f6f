//! benches/compare.py on the CPU path with a small total: the harness starts both servers, runs
//! the client against each, and every request of both gets an answer. It asserts no speed.

#[path = "../../engine/tests/common/mod.rs"]
mod engine_common;

use std::path::Path;
use std::process::Command;

#[test]
fn compare_runs_baseline_and_pipeline_and_writes_the_tables() {
    engine_common::models_dir();
    let server = Path::new(env!("CARGO_BIN_EXE_server"));
    let client = server.with_file_name("client_qps");
    assert!(
        client.is_file(),
        "{} is missing: build every binary first (cargo build --bins)",
        client.display()
    );
    let out_dir = engine_common::temp_dir("compare");
    let root = engine_common::repo_root();
    let out = Command::new("python3")
        .current_dir(&root)
        .args(["benches/compare.py", "--toml", "configs/tiny_cpu.toml"])
        .arg("--server")
        .arg(server)
        .arg("--client")
        .arg(&client)
        .args([
            "--request_client",
            "2",
            "--request_batch",
            "1,2",
            "--total",
            "40",
        ])
        .args(["--warmup", "5", "--machine", "test", "--out-dir"])
        .arg(&out_dir)
        .output()
        .expect("python3 runs benches/compare.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "compare failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for table in ["### Throughput", "### Response time", "### Resources"] {
        assert!(stdout.contains(table), "{table} missing:\n{stdout}");
    }
    let json = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("compare wrote its JSON");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for key in [
        "device",
        "date",
        "commit",
        "config",
        "request_client",
        "request_batch",
    ] {
        assert!(!doc[key].is_null(), "{key} missing in {doc}");
    }
    let runs = doc["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for run in runs {
        for server in ["baseline", "pipeline"] {
            let r = &run[server];
            assert_eq!(r["errors"], 0, "{server}: {r}");
            assert_eq!(r["total"], 40, "{server}: {r}");
            assert!(r["qps"].as_f64().unwrap() > 0.0);
            assert!(r["server_cpu_pct"].as_f64().is_some(), "{server}: {r}");
            assert!(r["tp99_ms"].as_f64().unwrap() >= r["tp50_ms"].as_f64().unwrap());
        }
    }
    let _ = std::fs::remove_dir_all(out_dir);
}
