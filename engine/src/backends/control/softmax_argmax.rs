use crate::backend::{Backend, InitContext};
use crate::error::{BackendError, ConfigError};
use crate::item::{Class, Item, Value};

/// Logits → the arg-max class and its softmax probability.
pub struct SoftmaxArgMax;

pub fn new(ctx: &InitContext<'_>) -> Result<Box<dyn Backend>, ConfigError> {
    ctx.no_args()?;
    Ok(Box::new(SoftmaxArgMax))
}

/// Softmax in f64 with the max subtracted, so large logits do not overflow. `None` for an
/// empty or non-finite row.
pub fn softmax_argmax(logits: &[f32]) -> Option<Class> {
    let (index, max, sum) = softmax_parts(logits)?;
    Some(Class {
        index,
        score: (f64::from(logits[index]) - max).exp() / sum,
    })
}

/// The `k` most probable classes, most probable first, by the same softmax: the first is
/// `softmax_argmax`'s answer, and equal logits come in its order (the later index first).
/// `None` where `softmax_argmax` has none.
pub fn softmax_top(logits: &[f32], k: usize) -> Option<Vec<Class>> {
    let (_, max, sum) = softmax_parts(logits)?;
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(b.cmp(&a)));
    Some(
        order
            .into_iter()
            .take(k)
            .map(|index| Class {
                index,
                score: (f64::from(logits[index]) - max).exp() / sum,
            })
            .collect(),
    )
}

/// The arg-max (the last of equal maxima), the max, and the sum of `exp(logit - max)`.
fn softmax_parts(logits: &[f32]) -> Option<(usize, f64, f64)> {
    let (index, &max) = logits
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))?;
    if !max.is_finite() {
        return None;
    }
    let max = f64::from(max);
    let sum: f64 = logits.iter().map(|&v| (f64::from(v) - max).exp()).sum();
    Some((index, max, sum))
}

impl Backend for SoftmaxArgMax {
    fn forward(&mut self, batch: &mut [Item]) -> Result<(), BackendError> {
        for item in batch {
            match &item.data {
                Value::Tensor(t) => match softmax_argmax(&t.data) {
                    Some(class) => item.result = Some(Value::Class(class)),
                    None => item.fail("SoftmaxArgMax: logits are empty or not finite"),
                },
                other => {
                    let msg = format!(
                        "SoftmaxArgMax expects a tensor of logits, got {}",
                        other.kind()
                    );
                    item.fail(msg)
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_max_and_its_probability() {
        let c = softmax_argmax(&[0.0, 2.0_f32.ln(), 0.0]).unwrap();
        assert_eq!(c.index, 1);
        assert!((c.score - 0.5).abs() < 1e-7);
        let c = softmax_argmax(&[1000.0, 0.0]).unwrap();
        assert_eq!(c.index, 0);
        assert!((c.score - 1.0).abs() < 1e-12);
        assert!(softmax_argmax(&[]).is_none());
        assert!(softmax_argmax(&[f32::NAN, f32::INFINITY]).is_none());
    }

    #[test]
    fn the_top_classes_start_with_the_arg_max_and_keep_its_order_of_ties() {
        let logits = [1.0, 3.0, 3.0, 0.0];
        let top = softmax_top(&logits, 3).unwrap();
        let best = softmax_argmax(&logits).unwrap();
        assert_eq!(top[0], best);
        assert_eq!(top.iter().map(|c| c.index).collect::<Vec<_>>(), [2, 1, 0]);
        let sum: f64 = logits.iter().map(|&v| (f64::from(v) - 3.0).exp()).sum();
        assert!((top[2].score - (-2.0f64).exp() / sum).abs() < 1e-15);
        assert_eq!(softmax_top(&logits, 9).unwrap().len(), 4);
        assert!(softmax_top(&[], 1).is_none());
    }
}
