//! The seed's pipeline on the CPU engine against onnxruntime on the same generated ResNet50:
//! relative L2 error ≤ 1e-4 on the logits of every test image, same arg-max.

mod common;

use engine::{Item, Pipeline, Value};

#[test]
fn seed_pipeline_matches_onnxruntime_on_every_test_image() {
    let p = common::repo_pipeline("resnet50.toml");
    let images = common::test_images();
    let items: Vec<Item> = images
        .iter()
        .map(|p| Item::new(std::fs::read(p).unwrap()))
        .collect();
    let out = p.run(items).unwrap();
    let (version, reference) = common::onnxruntime_logits(&images);
    println!("onnxruntime {version}");

    let mut labels = std::collections::BTreeSet::new();
    for (i, (path, outcome)) in images.iter().zip(&out).enumerate() {
        let item = outcome
            .as_ref()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let Some(Value::Tensor(t)) = &item.result else {
            panic!("{}: no logits", path.display())
        };
        let theirs = &reference[i * 1000..(i + 1) * 1000];
        let err = common::rel_l2(&t.data, theirs);
        let (a, b) = (common::argmax(&t.data), common::argmax(theirs));
        println!(
            "{}: rel L2 {err:.2e}, arg-max {a} (onnxruntime {b})",
            path.display()
        );
        assert!(err <= 1e-4, "{}: relative L2 error {err}", path.display());
        assert_eq!(a, b, "{}", path.display());
        labels.insert(a);
    }
    // The generated weights must tell images apart, or the arg-max check proves little.
    assert!(labels.len() >= 3, "only {} distinct classes", labels.len());
}

#[test]
fn the_seed_file_as_written_fails_with_the_hint() {
    let path = common::repo_root().join("engine/tests/fixtures/seed_resnet50.toml");
    let e = Pipeline::from_toml(&path).err().unwrap().to_string();
    assert!(
        e.contains("node [cpu_decoder], key `next` = \"cpu_posprocess\""),
        "{e}"
    );
    assert!(e.contains("did you mean `cpu_posdecoder`?"), "{e}");
}

#[test]
fn bad_images_fail_only_their_own_items() {
    let p = common::repo_pipeline("resnet50.toml");
    let good = std::fs::read(common::repo_root().join("benches/imgs/chelsea.jpg")).unwrap();
    let mut truncated = good.clone();
    truncated.truncate(200);
    let mut garbage_huffman = good.clone();
    for b in garbage_huffman.iter_mut().skip(600).take(400) {
        *b = 0xA5;
    }
    let inputs: Vec<Vec<u8>> = vec![
        good.clone(),
        Vec::new(),
        b"this is not an image".to_vec(),
        truncated,
        vec![0xFF, 0xD8, 0xFF],
        garbage_huffman,
        good,
    ];
    let out = p.run(inputs.into_iter().map(Item::new).collect()).unwrap();
    assert!(out[0].is_ok());
    assert!(out[6].is_ok());
    for (i, o) in out.iter().enumerate().skip(1).take(4) {
        let e = o
            .as_ref()
            .err()
            .unwrap_or_else(|| panic!("input {i} should fail"))
            .to_string();
        assert!(
            e.starts_with("node [cpu_decoder] produced no result: "),
            "{i}: {e}"
        );
    }
    println!(
        "damaged Huffman data: {:?}",
        out[5].as_ref().map(|_| "decoded with warnings")
    );
}

/// A JPEG whose frame header claims 10000×10000 pixels: refused by the documented
/// `max_pixels` limit (50,000,000) before any pixel buffer is allocated.
#[test]
fn an_image_bomb_is_refused_by_the_pixel_limit() {
    let mut jpeg = std::fs::read(common::repo_root().join("benches/imgs/odd_1x1.jpg")).unwrap();
    let sof = jpeg
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("baseline SOF0");
    // SOF0: marker, length (2), precision (1), height (2), width (2).
    jpeg[sof + 5..sof + 7].copy_from_slice(&10000u16.to_be_bytes());
    jpeg[sof + 7..sof + 9].copy_from_slice(&10000u16.to_be_bytes());
    let p = common::repo_pipeline("resnet50.toml");
    let out = p.run(vec![Item::new(jpeg)]).unwrap();
    let e = out[0].as_ref().expect_err("must be refused").to_string();
    assert!(
        e.contains("10000x10000 pixels is above the limit of 50000000 pixels"),
        "{e}"
    );
}

/// A model file that exists but is no ONNX: start-up stops, naming the node, key and reason.
#[test]
fn a_node_whose_instances_cannot_be_built_stops_start_up() {
    let dir = common::temp_dir("not-onnx");
    let model = dir.join("model.onnx");
    std::fs::write(&model, b"this is not a protobuf").unwrap();
    let toml = format!(
        "[m]\nbackend = \"TensorrtTensor\"\ndevice = \"cpu\"\ninstance_num = 2\nmodel = \"{}\"\n",
        model.display()
    );
    let config = engine::Config::parse(&toml, &dir.join("t.toml")).unwrap();
    let e = common::start_error(config);
    assert!(e.contains("node [m], key `model`"), "{e}");
    assert!(
        e.contains(&format!(
            "a loadable ONNX model: {} is not an ONNX model",
            model.display()
        )),
        "{e}"
    );
}

/// `mean`/`std` are checked as numbers at load; their count only once the model says how many
/// channels it takes.
#[test]
fn a_mean_of_the_wrong_length_stops_start_up_naming_the_models_channels() {
    let model = common::models_dir().join("tiny_cnn.onnx");
    let toml = format!(
        "[m]\nbackend = \"TensorrtTensor\"\ndevice = \"cpu\"\nmodel = \"{}\"\nmean = \"1, 2\"\n",
        model.display()
    );
    let config = engine::Config::parse(&toml, std::path::Path::new("t.toml")).unwrap();
    let e = common::start_error(config);
    assert_eq!(
        e,
        "t.toml: node [m], key `mean` = \"1, 2\": 3 numbers separated by commas"
    );
}
