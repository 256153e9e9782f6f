//! `infer_detect`'s answer from what a detection pipeline leaves on its item: the `[n, 6]`
//! detections (x1, y1, x2, y2, score, class: `PostProcYoloV8`'s result) as `result`, or, after
//! a `MapReduce` that classified each box, the boxes under `_box` and one result per box as the
//! `result` list.

use engine::backends::control::softmax_argmax;
use engine::{Item, Tensor, Value, BOX};
use serve_thrift::{Detection, DetectionResult};
use thrift::OrderedFloat;

use crate::failure::Failure;

/// Class names, where the server has them: the index as text otherwise.
pub fn label(names: Option<&[String]>, index: usize) -> String {
    names
        .and_then(|n| n.get(index).cloned())
        .unwrap_or_else(|| index.to_string())
}

/// The detections of `item`; `labels` names the classes of the per-box results.
pub fn detections(mut item: Item, labels: Option<&[String]>) -> Result<DetectionResult, Failure> {
    let result = item.result.take().ok_or(Failure::NoResult)?;
    let (boxes, per_box) = match (result, item.extras.remove(BOX)) {
        (Value::Tensor(t), _) => (t, None),
        (Value::List(results), Some(Value::Tensor(t))) => (t, Some(results)),
        (Value::List(_), other) => {
            let has = other.map_or("nothing", |v| v.kind());
            return Err(Failure::NotDetections(format!(
                "a list of per-box results with {has} under `{BOX}`"
            )));
        }
        (other, _) => return Err(Failure::NotDetections(other.kind().to_string())),
    };
    let rows = rows(&boxes)?;
    if let Some(results) = &per_box {
        if results.len() != rows.len() {
            return Err(Failure::NotDetections(format!(
                "{} per-box results for {} boxes",
                results.len(),
                rows.len()
            )));
        }
    }
    let mut detections = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let class = row[5];
        if !(class >= 0.0 && class.fract() == 0.0 && class <= i32::MAX as f32) {
            return Err(Failure::NotDetections(format!(
                "a detection whose class is {class}"
            )));
        }
        let f = |v: f32| OrderedFloat::from(f64::from(v));
        let mut d = Detection::new(
            f(row[0]),
            f(row[1]),
            f(row[2]),
            f(row[3]),
            f(row[4]),
            class as i32,
            (class as usize).to_string(),
            None,
            None,
            None,
        );
        if let Some(results) = &per_box {
            let c = match &results[i] {
                Value::Class(c) => *c,
                Value::Tensor(t) => softmax_argmax(&t.data).ok_or(Failure::OutputNotFinite)?,
                other => {
                    return Err(Failure::NotDetections(format!(
                        "a per-box result that is {}",
                        other.kind()
                    )))
                }
            };
            d.crop_class_id = Some(i32::try_from(c.index).unwrap_or(i32::MAX));
            d.crop_label = Some(label(labels, c.index));
            d.crop_score = Some(OrderedFloat::from(c.score));
        }
        detections.push(d);
    }
    Ok(DetectionResult::new(detections))
}

/// The rows of an `[n, k ≥ 6]` tensor (a `[0]` or `[0, 6]` one is no detection).
fn rows(t: &Tensor) -> Result<Vec<&[f32]>, Failure> {
    match t.shape.as_slice() {
        [0] | [0, _] => Ok(Vec::new()),
        [_, k] if *k >= 6 => Ok(t.data.chunks_exact(*k).collect()),
        other => Err(Failure::NotDetections(format!(
            "a tensor of shape {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::Class;

    fn ending_in(result: Value) -> Item {
        Item {
            result: Some(result),
            ..Item::default()
        }
    }

    fn boxes(n: usize) -> Tensor {
        let data = (0..n)
            .flat_map(|i| [i as f32, 1.0, 10.0 + i as f32, 12.0, 0.5, 2.0])
            .collect();
        Tensor::new(vec![n, 6], data)
    }

    #[test]
    fn a_detector_s_rows_become_detections() {
        let item = ending_in(Value::Tensor(boxes(2)));
        let r = detections(item, None).unwrap();
        assert_eq!(r.detections.len(), 2);
        assert_eq!(r.detections[1].x1, OrderedFloat::from(1.0));
        assert_eq!(r.detections[1].x2, OrderedFloat::from(11.0));
        assert_eq!(r.detections[1].class_id, 2);
        assert_eq!(r.detections[1].label, "2");
        assert_eq!(r.detections[1].crop_label, None);
    }

    #[test]
    fn per_box_classes_are_paired_with_their_boxes() {
        let mut item = Item::default();
        item.extras.insert(BOX.into(), Value::Tensor(boxes(2)));
        let classes =
            [(3, 0.9), (1, 0.6)].map(|(index, score)| Value::Class(Class { index, score }));
        item.result = Some(Value::List(classes.to_vec()));
        let names: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let r = detections(item, Some(&names)).unwrap();
        assert_eq!(r.detections[0].crop_label.as_deref(), Some("d"));
        assert_eq!(r.detections[1].crop_class_id, Some(1));
        assert_eq!(r.detections[1].crop_score, Some(OrderedFloat::from(0.6)));
    }

    #[test]
    fn anything_else_is_refused_with_what_it_was() {
        let item = ending_in(Value::Class(Class {
            index: 1,
            score: 0.5,
        }));
        assert!(matches!(
            detections(item, None),
            Err(Failure::NotDetections(_))
        ));
        let mut item = Item::default();
        item.extras.insert(BOX.into(), Value::Tensor(boxes(3)));
        item.result = Some(Value::List(vec![Value::Text("x".into()); 2]));
        let e = detections(item, None).unwrap_err().to_string();
        assert!(e.contains("2 per-box results for 3 boxes"), "{e}");
        let item = ending_in(Value::Tensor(Tensor::new(vec![2, 4], vec![0.0; 8])));
        assert!(detections(item, None).is_err());
        let item = ending_in(Value::Tensor(Tensor::new(vec![0, 6], vec![])));
        assert_eq!(detections(item, None).unwrap().detections.len(), 0);
    }
}
