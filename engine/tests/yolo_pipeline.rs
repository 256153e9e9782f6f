//! configs/yolo.toml end to end on the committed photos (decode, letterbox, the generated
//! YOLO-shaped model on the CPU engine, PostProcYoloV8) against the same pipeline written with
//! OpenCV, numpy and onnxruntime (engine/tests/py/yolo_pipeline_ref.py): the same detections,
//! classes equal, corners within 0.5 pixel of the photo, scores within 1e-4.

mod common;

use engine::{Item, Value};

#[test]
fn yolo_toml_detects_what_the_reference_detects() {
    let images = common::test_images();
    let model = common::models_dir().join("tiny_yolo.onnx");
    let dir = common::temp_dir("yolo-pipeline");
    let mut args = vec![
        model.to_str().unwrap().to_string(),
        dir.to_str().unwrap().to_string(),
    ];
    args.extend(images.iter().map(|p| p.to_str().unwrap().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    println!(
        "onnxruntime {}",
        common::python("yolo_pipeline_ref.py", &args).trim()
    );

    let p = common::repo_pipeline("yolo.toml");
    let items = images
        .iter()
        .map(|path| Item::new(Value::Bytes(std::fs::read(path).unwrap().into())))
        .collect();
    let outcomes = p.run(items).unwrap();
    let mut total = 0;
    for (path, outcome) in images.iter().zip(outcomes) {
        let name = path.file_name().unwrap().to_str().unwrap();
        let done = outcome.unwrap_or_else(|e| panic!("{name}: {e}"));
        let Some(Value::Tensor(ours)) = &done.result else {
            panic!("{name}: no detections tensor");
        };
        let theirs: Vec<Vec<f32>> = std::fs::read_to_string(dir.join(format!("{name}.det")))
            .unwrap()
            .lines()
            .map(|l| l.split_whitespace().map(|v| v.parse().unwrap()).collect())
            .collect();
        assert_eq!(ours.shape, [theirs.len(), 6], "{name}: detections");
        for (i, (a, b)) in ours.data.chunks(6).zip(&theirs).enumerate() {
            assert_eq!(a[5], b[5], "{name}, detection {i}: class");
            assert!(
                (a[4] - b[4]).abs() <= 1e-4,
                "{name}, detection {i}: {a:?} against {b:?}"
            );
            for k in 0..4 {
                assert!(
                    (a[k] - b[k]).abs() <= 0.5,
                    "{name}, detection {i}: {a:?} against {b:?}"
                );
            }
        }
        println!("{name}: {} detections", theirs.len());
        total += theirs.len();
    }
    assert!(
        total > 0,
        "no photo gave a detection: the test would not test the boxes"
    );
}
