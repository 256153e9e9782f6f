use crate::backend::{Backend, InitContext, Takes};
use crate::error::{BackendError, ConfigError};
use crate::item::Item;

/// `Sequential[A,B,C]`: A, then B on A's results, … on the same batch. An item A could not
/// handle skips the rest and keeps A's reason. Neighbours that can run as one GPU kernel
/// (ResizeTensor, cvtColorTensor) are fused when the sequence is built.
pub struct Sequential {
    stages: Vec<Box<dyn Backend>>,
}

pub fn new(ctx: &InitContext<'_>) -> Result<Box<dyn Backend>, ConfigError> {
    if ctx.expr.args.is_empty() {
        return Err(ctx.params().error(
            "backend",
            ctx.params().raw("backend").unwrap_or_default(),
            "Sequential to list its backends, as `Sequential[A,B]`",
        ));
    }
    Ok(Box::new(Sequential {
        stages: fuse(ctx.build_args()?),
    }))
}

fn fuse(built: Vec<Box<dyn Backend>>) -> Vec<Box<dyn Backend>> {
    let mut stages: Vec<Box<dyn Backend>> = Vec::with_capacity(built.len());
    for stage in built {
        let fused = stages.last().and_then(|prev| prev.fuse(stage.as_ref()));
        match fused {
            Some(both) => {
                stages.pop();
                stages.push(both);
            }
            None => stages.push(stage),
        }
    }
    stages
}

impl Backend for Sequential {
    fn takes(&self) -> Takes {
        self.stages.first().map_or(Takes::Any, |s| s.takes())
    }

    fn forward(&mut self, batch: &mut [Item]) -> Result<(), BackendError> {
        for (i, stage) in self.stages.iter_mut().enumerate() {
            if i > 0 {
                for item in batch.iter_mut() {
                    if let Some(result) = item.result.take() {
                        item.data = result;
                    }
                }
            }
            if batch.iter().all(|it| it.error.is_none()) {
                stage.forward(batch)?;
                continue;
            }
            // Run the stage on the items still going; the failed ones keep their reason.
            let live: Vec<usize> = (0..batch.len())
                .filter(|&j| batch[j].error.is_none())
                .collect();
            if live.is_empty() {
                break;
            }
            let mut sub: Vec<Item> = live
                .iter()
                .map(|&j| std::mem::take(&mut batch[j]))
                .collect();
            let outcome = stage.forward(&mut sub);
            for (j, item) in live.into_iter().zip(sub) {
                batch[j] = item;
            }
            outcome?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Fusable;
    use crate::item::Value;

    /// Appends its letter to the item's text; `C` offers itself for fusion, `A` absorbs it.
    struct Letter(char);

    impl Backend for Letter {
        fn forward(&mut self, batch: &mut [Item]) -> Result<(), BackendError> {
            for item in batch {
                let mut text = match &item.data {
                    Value::Text(t) => t.clone(),
                    _ => String::new(),
                };
                text.push(self.0);
                item.result = Some(Value::Text(text));
            }
            Ok(())
        }

        fn fusable(&self) -> Option<Fusable> {
            (self.0 == 'C').then_some(Fusable::MatToTensor)
        }

        fn fuse(&self, next: &dyn Backend) -> Option<Box<dyn Backend>> {
            (self.0 == 'A' && next.fusable().is_some()).then(|| Box::new(Letter('F')) as _)
        }
    }

    fn run(letters: &str) -> (usize, String) {
        let stages = fuse(letters.chars().map(|c| Box::new(Letter(c)) as _).collect());
        let n = stages.len();
        let mut seq = Sequential { stages };
        let mut batch = vec![Item::new(Value::Text(String::new()))];
        seq.forward(&mut batch).expect("forward");
        match batch[0].result.take() {
            Some(Value::Text(t)) => (n, t),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_fusable_pair_becomes_one_stage() {
        assert_eq!(run("ACB"), (2, "FB".to_string()));
        assert_eq!(run("BAC"), (2, "BF".to_string()));
        // C before A, or with something between, is left alone.
        assert_eq!(run("CAB"), (3, "CAB".to_string()));
        assert_eq!(run("ABC"), (3, "ABC".to_string()));
    }
}
