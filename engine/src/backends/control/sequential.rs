use crate::backend::{Backend, InitContext};
use crate::error::{BackendError, ConfigError};
use crate::item::Item;

/// `Sequential[A,B,C]`: A, then B on A's results, … on the same batch. An item A could not
/// handle skips the rest and keeps A's reason.
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
        stages: ctx.build_args()?,
    }))
}

impl Backend for Sequential {
    fn forward(&self, batch: &mut [Item]) -> Result<(), BackendError> {
        for (i, stage) in self.stages.iter().enumerate() {
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
