//! A stock Python Thrift client (TSocket + TBufferedTransport + TBinaryProtocol) against the real
//! server binary: ping, labels and scores against the engine's own answers and onnxruntime, bad
//! inputs answered with TApplicationException on a connection that keeps working, and the
//! baseline answering exactly as the pipeline does.

mod common;

use std::collections::BTreeMap;

use engine::backends::control::softmax_argmax;
use engine::{Item, Pipeline, PipelineOptions, Registry, Value};
use serde_json::Value as Json;

fn run_python_client(port: u16, images: &[String]) -> Json {
    let stubs = common::python_stubs();
    let script = common::repo_root().join("server/tests/py/thrift_client.py");
    let mut args = vec![stubs.to_str().unwrap().to_string(), port.to_string()];
    args.extend(images.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    serde_json::from_str(common::python_script(&script, &args).trim()).unwrap()
}

/// (label, score) per image from the engine in-process.
fn engine_answers(config: &std::path::Path, images: &[String]) -> BTreeMap<String, (String, f64)> {
    let config = engine::Config::load(config).unwrap();
    let p = Pipeline::build(
        config,
        Registry::with_defaults(),
        PipelineOptions::default(),
    )
    .unwrap();
    let items = images
        .iter()
        .map(|i| Item::new(std::fs::read(i).unwrap()))
        .collect();
    let out = p.run(items).unwrap();
    images
        .iter()
        .zip(out)
        .map(|(name, o)| {
            let Some(Value::Tensor(t)) = o.unwrap().result else {
                panic!("no logits")
            };
            let c = softmax_argmax(&t.data).unwrap();
            (name.clone(), (c.index.to_string(), c.score))
        })
        .collect()
}

/// onnxruntime's (label, score) on the same preprocessed input.
fn onnxruntime_answers(images: &[String]) -> BTreeMap<String, (String, f64)> {
    let paths: Vec<std::path::PathBuf> = images.iter().map(Into::into).collect();
    let (_, logits) = common::onnxruntime_logits(&paths);
    images
        .iter()
        .zip(logits.chunks_exact(1000))
        .map(|(name, row)| {
            let c = softmax_argmax(row).unwrap();
            (name.clone(), (c.index.to_string(), c.score))
        })
        .collect()
}

fn answers(reply: &Json) -> BTreeMap<String, (String, f64)> {
    reply["images"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                (
                    v["label"].as_str().unwrap().to_string(),
                    v["score"].as_f64().unwrap(),
                ),
            )
        })
        .collect()
}

#[test]
fn python_client_gets_the_engines_answers_and_clear_errors() {
    let config = common::config_copy("resnet50.toml", &[]);
    let images: Vec<String> = common::test_images()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    // The PNG first: the script reuses the first image as its known-good one.
    let mut ordered: Vec<String> = images
        .iter()
        .filter(|i| i.ends_with(".png"))
        .cloned()
        .collect();
    ordered.extend(images.iter().filter(|i| !i.ends_with(".png")).cloned());

    let server = common::Server::start(&["--toml", config.to_str().unwrap()]);
    let reply = run_python_client(server.port, &ordered);
    let (status, log) = server.stop();
    assert!(status.success(), "server exit {status}: {log}");

    assert_eq!(reply["ping"], Json::Bool(true));
    let served = answers(&reply);
    assert_eq!(
        served.len(),
        images.len(),
        "every image, the PNG included, is classified"
    );
    let ours = engine_answers(&config, &images);
    let reference = onnxruntime_answers(&images);
    for (name, (label, score)) in &served {
        let (l, s) = &ours[name];
        assert_eq!(label, l, "{name}: label vs the engine");
        assert!(
            (score - s).abs() <= 1e-6,
            "{name}: score {score} vs engine {s}"
        );
        let (l, s) = &reference[name];
        assert_eq!(label, l, "{name}: label vs onnxruntime");
        assert!(
            (score - s).abs() <= 1e-4,
            "{name}: score {score} vs onnxruntime {s}"
        );
    }
    for case in ["corrupt", "empty", "text"] {
        let bad = &reply["bad"][case];
        let msg = bad["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{case} was not refused"));
        assert!(
            msg.starts_with("node [cpu_decoder] produced no result: "),
            "{case}: {msg}"
        );
        assert!(
            bad["after"].is_string(),
            "{case}: the connection must still work"
        );
    }
    assert!(reply["bad"]["empty"]["error"]
        .as_str()
        .unwrap()
        .contains("empty data"));
    // A JPEG cut short (py/client.py's "corrupt"): refused as OpenCV refuses it.
    assert!(reply["bad"]["corrupt"]["error"]
        .as_str()
        .unwrap()
        .contains("truncated JPEG"));
}

#[test]
fn baseline_answers_exactly_as_the_pipeline() {
    let config = common::config_copy("resnet50_cpu.toml", &[]);
    let images: Vec<String> = common::test_images()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let pipeline = common::Server::start(&["--toml", config.to_str().unwrap()]);
    let a = answers(&run_python_client(pipeline.port, &images));
    drop(pipeline);
    let baseline = common::Server::start(&["--toml", config.to_str().unwrap(), "--baseline"]);
    let b = answers(&run_python_client(baseline.port, &images));
    let (status, log) = baseline.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("baseline (locked, batch 1)"), "{log}");
    assert_eq!(a.len(), images.len());
    for (name, (label, score)) in &a {
        let (l, s) = &b[name];
        assert_eq!(label, l, "{name}");
        assert!(
            (score - s).abs() <= 1e-5,
            "{name}: pipeline {score} vs baseline {s}"
        );
    }
}
