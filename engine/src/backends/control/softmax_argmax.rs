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
    let (index, &max) = logits
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))?;
    if !max.is_finite() {
        return None;
    }
    let sum: f64 = logits
        .iter()
        .map(|&v| (f64::from(v) - f64::from(max)).exp())
        .sum();
    Some(Class {
        index,
        score: 1.0 / sum,
    })
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
}
