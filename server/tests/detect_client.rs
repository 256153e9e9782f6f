//! `infer_detect` (thrift/detect.thrift) beside the docs' `infer_batch` on one port, through
//! stock Python Thrift clients: on configs/detect_classify.toml the detections and each box's
//! class equal the engine's in-process answer; on a classifier the docs' client, built from
//! serve.thrift alone, gets the same labels as a client built from detect.thrift; each method
//! on the pipeline it does not fit gets a clear error on a connection that keeps working.

mod common;

use std::path::PathBuf;
use std::process::Command;

use engine::{Item, Pipeline, PipelineOptions, Registry, Value, BOX};
use serde_json::Value as Json;

fn detect_stubs() -> PathBuf {
    let dir = common::temp_dir("pystubs-detect");
    let status = Command::new("thrift")
        .args(["-r", "-out", dir.to_str().unwrap(), "--gen", "py"])
        .arg(common::repo_root().join("thrift/detect.thrift"))
        .status()
        .expect("thrift compiler (apt-get install thrift-compiler)");
    assert!(status.success());
    dir
}

fn run_clients(port: u16, images: &[String]) -> Json {
    let serve = common::python_stubs();
    let detect = detect_stubs();
    let script = common::repo_root().join("server/tests/py/detect_client.py");
    let mut args = vec![
        serve.to_str().unwrap().to_string(),
        detect.to_str().unwrap().to_string(),
        port.to_string(),
    ];
    args.extend(images.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    serde_json::from_str(common::python_script(&script, &args).trim()).unwrap()
}

fn images() -> Vec<String> {
    common::test_images()
        .iter()
        .map(|p| p.display().to_string())
        .collect()
}

#[test]
fn infer_detect_gives_the_engines_boxes_and_classes() {
    let config = common::config_copy("detect_classify.toml", &[]);
    let images = images();
    let server = common::Server::start(&["--toml", config.to_str().unwrap()]);
    let reply = run_clients(server.port, &images);
    let (status, log) = server.stop();
    assert!(status.success(), "server exit {status}: {log}");
    assert_eq!(reply["ping"], Json::Bool(true));

    let p = Pipeline::build(
        engine::Config::load(&config).unwrap(),
        Registry::with_defaults(),
        PipelineOptions::default(),
    )
    .unwrap();
    let items = images
        .iter()
        .map(|i| Item::new(std::fs::read(i).unwrap()))
        .collect();
    let mut total = 0;
    for (name, outcome) in images.iter().zip(p.run(items).unwrap()) {
        let item = outcome.unwrap();
        let Some(Value::Tensor(boxes)) = item.extras.get(BOX) else {
            panic!("{name}: no boxes")
        };
        let Some(Value::List(classes)) = &item.result else {
            panic!("{name}: no classes")
        };
        let served = reply["images"][name]["detect"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: {}", reply["images"][name]["detect"]));
        assert_eq!(served.len(), classes.len(), "{name}");
        for (i, (d, (row, class))) in served
            .iter()
            .zip(boxes.data.chunks(6).zip(classes))
            .enumerate()
        {
            for k in 0..4 {
                let v = d["box"][k].as_f64().unwrap();
                assert!((v - f64::from(row[k])).abs() < 1e-4, "{name} {i}: {d}");
            }
            assert!((d["score"].as_f64().unwrap() - f64::from(row[4])).abs() < 1e-6);
            assert_eq!(d["class_id"].as_i64().unwrap(), row[5] as i64, "{name} {i}");
            assert_eq!(d["label"].as_str().unwrap(), (row[5] as i64).to_string());
            let Value::Class(c) = class else {
                panic!("{class:?}")
            };
            assert_eq!(d["crop_class_id"].as_u64().unwrap() as usize, c.index);
            assert_eq!(d["crop_label"].as_str().unwrap(), c.index.to_string());
            assert!((d["crop_score"].as_f64().unwrap() - c.score).abs() < 1e-9);
        }
        total += served.len();
        // A classification call on a detector: a clear error, the connection still answers.
        for client in ["batch_old", "batch_new"] {
            let e = reply["images"][name][client]["error"].as_str().unwrap();
            assert!(e.contains("not logits"), "{name} {client}: {e}");
        }
    }
    assert!(total > 0, "no detections: the test would not test them");
}

#[test]
fn the_docs_client_and_the_detect_client_classify_alike() {
    let config = common::config_copy("tiny_cpu.toml", &[]);
    let images = images();
    let server = common::Server::start(&["--toml", config.to_str().unwrap()]);
    let reply = run_clients(server.port, &images);
    let (status, log) = server.stop();
    assert!(status.success(), "server exit {status}: {log}");
    for name in &images {
        let r = &reply["images"][name];
        assert!(r["batch_old"]["label"].is_string(), "{name}: {r}");
        assert_eq!(r["batch_old"], r["batch_new"], "{name}");
        let e = r["detect"]["error"].as_str().unwrap();
        assert!(e.contains("not detections"), "{name}: {e}");
    }
}
