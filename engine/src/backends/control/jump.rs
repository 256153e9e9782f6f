use crate::backend::{Backend, InitContext, PipelineHandle};
use crate::error::{BackendError, ConfigError};
use crate::item::{Item, Value};

/// `Jump[node]`: hands each item to the sub-graph that starts at `node`, waits for it, and
/// takes its result.
pub struct Jump {
    target: String,
    pipeline: PipelineHandle,
}

pub fn new(ctx: &InitContext<'_>) -> Result<Box<dyn Backend>, ConfigError> {
    let target = ctx.single_arg()?;
    if !target.args.is_empty() {
        return Err(ctx.params().error(
            "backend",
            ctx.params().raw("backend").unwrap_or_default(),
            "Jump to name one node, as `Jump[node]`",
        ));
    }
    Ok(Box::new(Jump {
        target: target.name.clone(),
        pipeline: ctx.pipeline.clone(),
    }))
}

impl Backend for Jump {
    fn forward(&mut self, batch: &mut [Item]) -> Result<(), BackendError> {
        let items: Vec<Item> = batch
            .iter_mut()
            .map(|item| Item {
                data: std::mem::take(&mut item.data),
                node_name: Some(self.target.clone()),
                extras: item.extras.clone(),
                ..Item::default()
            })
            .collect();
        let outcomes = self
            .pipeline
            .run(items)
            .map_err(|e| BackendError::new(format!("Jump[{}]: {e}", self.target)))?;
        for (item, outcome) in batch.iter_mut().zip(outcomes) {
            match outcome {
                Ok(done) => {
                    item.result = Some(done.result.unwrap_or(Value::Empty));
                    item.extras = done.extras;
                }
                Err(e) => item.fail(format!("Jump[{}]: {e}", self.target)),
            }
        }
        Ok(())
    }
}
