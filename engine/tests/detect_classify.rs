//! configs/detect_classify.toml end to end on the committed photos: the detections are the
//! YOLO pipeline's (tests/yolo_pipeline.rs checks them against a reference), and each box's
//! class, from the MapReduce children's crop, resize and classifier, equals what OpenCV, numpy
//! and onnxruntime give on the same boxes (engine/tests/py/detect_classify_ref.py): classes
//! equal, probabilities within 1e-4.

mod common;

use engine::{Item, Value, BOX};

#[test]
fn each_detected_box_is_classified_as_the_reference_classifies_its_crop() {
    let images = common::test_images();
    let dir = common::temp_dir("detect-classify");
    let p = common::repo_pipeline("detect_classify.toml");
    let items = images
        .iter()
        .map(|path| Item::new(Value::Bytes(std::fs::read(path).unwrap().into())))
        .collect();
    let outcomes = p.run(items).unwrap();
    let mut ours = Vec::new();
    for (path, outcome) in images.iter().zip(outcomes) {
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let done = outcome.unwrap_or_else(|e| panic!("{name}: {e}"));
        let Some(Value::Tensor(boxes)) = done.extras.get(BOX) else {
            panic!("{name}: no `{BOX}` tensor: {:?}", done.extras.keys());
        };
        let Some(Value::List(classes)) = &done.result else {
            panic!("{name}: the result is not a list: {:?}", done.result);
        };
        assert_eq!(boxes.shape.len(), 2, "{name}");
        assert_eq!(boxes.shape[0], classes.len(), "{name}: one class per box");
        let text: String = boxes
            .data
            .chunks(6)
            .map(|b| {
                let v: Vec<String> = b.iter().map(|x| format!("{x:.9}")).collect();
                v.join(" ") + "\n"
            })
            .collect();
        std::fs::write(dir.join(format!("{name}.ours")), text).unwrap();
        ours.push((name, classes.clone()));
    }
    let model = common::models_dir().join("tiny_cnn.onnx");
    let mut args = vec![
        model.to_str().unwrap().to_string(),
        dir.to_str().unwrap().to_string(),
    ];
    args.extend(images.iter().map(|p| p.to_str().unwrap().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    println!(
        "onnxruntime {}",
        common::python("detect_classify_ref.py", &args).trim()
    );
    let mut total = 0;
    for (name, classes) in ours {
        let theirs: Vec<(usize, f64)> = std::fs::read_to_string(dir.join(format!("{name}.cls")))
            .unwrap()
            .lines()
            .map(|l| {
                let (k, p) = l.split_once(' ').unwrap();
                (k.parse().unwrap(), p.parse().unwrap())
            })
            .collect();
        assert_eq!(classes.len(), theirs.len(), "{name}");
        for (i, (ours, (k, p))) in classes.iter().zip(&theirs).enumerate() {
            let Value::Class(c) = ours else {
                panic!("{name}, box {i}: not a class: {ours:?}");
            };
            assert_eq!(c.index, *k, "{name}, box {i}: class");
            assert!(
                (c.score - p).abs() <= 1e-4,
                "{name}, box {i}: {} against {p}",
                c.score
            );
        }
        println!("{name}: {} boxes classified", theirs.len());
        total += theirs.len();
    }
    assert!(
        total > 0,
        "no photo gave a box: the test would not test the crops"
    );
}
