//! `SyncTensor[...]` as GPU backends use it, on the CPU: the backends inside it share its
//! stream scope, keep what their queued work reads there instead of waiting themselves, and
//! the `SyncTensor` waits and lets go once per batch, on success and on failure. Under load
//! every request is answered once with its own result, and shutdown answers every call in
//! flight; the deadline through a `SyncTensor` is tests/scheduler.rs's
//! (docs/architecture.md#the-engine-items-backends-scheduler).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::backend::{Backend, InitContext, Registry};
use engine::gpu::scope::StreamScope;
use engine::{
    BackendError, Config, ConfigError, Item, Pipeline, PipelineOptions, RequestError, Value,
};

/// Counts what a `Held` backend kept and not yet let go, for its instance.
struct Kept(Arc<AtomicUsize>);

impl Kept {
    fn new(live: &Arc<AtomicUsize>) -> Kept {
        live.fetch_add(1, Ordering::SeqCst);
        Kept(live.clone())
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a GPU backend inside `SyncTensor` does, without a GPU: keeps one value per item in the
/// scope (as ResizeTensor keeps its sources until the wait), appends "+" to the text, and
/// fails the whole batch on "batch-error" after keeping (as a launch error after enqueueing).
/// Outside a `SyncTensor` it has no scope and says so in its result. A value kept for an
/// earlier batch and still alive fails the next batch: the scope let go too late.
struct Held {
    scope: Option<Arc<StreamScope>>,
    live: Arc<AtomicUsize>,
}

fn held(ctx: &InitContext<'_>) -> Result<Box<dyn Backend>, ConfigError> {
    Ok(Box::new(Held {
        scope: ctx.stream_scope.cloned(),
        live: Arc::new(AtomicUsize::new(0)),
    }))
}

impl Backend for Held {
    fn forward(&mut self, batch: &mut [Item]) -> Result<(), BackendError> {
        let Some(scope) = &self.scope else {
            for item in batch.iter_mut() {
                item.result = Some(Value::Text("no scope".into()));
            }
            return Ok(());
        };
        let left = self.live.load(Ordering::SeqCst);
        if left != 0 {
            return Err(BackendError::new(format!(
                "{left} values kept for an earlier batch are still alive"
            )));
        }
        for _ in batch.iter() {
            scope.keep(Kept::new(&self.live));
        }
        if batch
            .iter()
            .any(|i| matches!(&i.data, Value::Text(t) if t == "batch-error"))
        {
            return Err(BackendError::new("refused the batch"));
        }
        for item in batch.iter_mut() {
            match &item.data {
                Value::Text(t) => item.result = Some(Value::Text(format!("{t}+"))),
                other => item.fail(format!("not text: {}", other.kind())),
            }
        }
        Ok(())
    }
}

fn pipeline(toml: &str, options: PipelineOptions) -> Pipeline {
    let mut r = Registry::with_defaults();
    r.register("Held", held, &[]);
    let config = Config::parse(toml, Path::new("test.toml")).unwrap();
    Pipeline::build(config, r, options).unwrap()
}

fn text(s: &str) -> Item {
    Item::new(Value::Text(s.into()))
}

fn result_text(o: &Result<Item, RequestError>) -> Result<String, String> {
    match o {
        Ok(item) => match &item.result {
            Some(Value::Text(t)) => Ok(t.clone()),
            other => Err(format!("unexpected result {other:?}")),
        },
        Err(e) => Err(e.to_string()),
    }
}

const TWO_NODES: &str = "batching_timeout = 1\n\
    [a]\nbackend = \"SyncTensor[Sequential[Held,Held]]\"\nmax = 8\ninstance_num = 2\nnext = \"b\"\n\
    [b]\nbackend = \"SyncTensor[Held]\"\nmax = 4\ninstance_num = 2\n";

#[test]
fn under_load_each_request_is_answered_once_and_what_was_kept_goes_with_its_batch() {
    let p = Arc::new(pipeline(TWO_NODES, PipelineOptions::default()));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (p, answers) = (p.clone(), answers.clone());
            std::thread::spawn(move || {
                for i in 0..150 {
                    // Every 25th request fails its batch inside the SyncTensor.
                    let s = if i % 25 == 7 {
                        "batch-error".to_string()
                    } else {
                        format!("{t}-{i}")
                    };
                    let (tx, rx) = std::sync::mpsc::channel();
                    p.submit(vec![text(&s)], move |out| {
                        let _ = tx.send(out);
                    })
                    .unwrap();
                    let out = rx.recv_timeout(Duration::from_secs(10)).unwrap();
                    // The callback runs once: a second answer would be a duplicate.
                    assert!(rx.recv_timeout(Duration::from_millis(1)).is_err());
                    assert_eq!(out.len(), 1);
                    answers.lock().unwrap().push((s, result_text(&out[0])));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let answers = answers.lock().unwrap();
    assert_eq!(answers.len(), 8 * 150);
    let mut failed_with_the_batch = 0;
    for (sent, got) in answers.iter() {
        match got {
            Ok(t) => assert_eq!(*t, format!("{sent}+++"), "sent {sent}"),
            // A failed batch fails its items: the refused one, and any batched with it.
            Err(e) => {
                assert!(e.contains("refused the batch"), "{sent}: {e}");
                failed_with_the_batch += 1;
            }
        }
    }
    let refused = answers.iter().filter(|(s, _)| s == "batch-error").count();
    assert_eq!(refused, 8 * 6);
    assert!(failed_with_the_batch >= refused);
    // The others were answered in full: the failures did not leave values alive.
    assert!(
        failed_with_the_batch < answers.len() / 4,
        "{failed_with_the_batch}"
    );
}

#[test]
fn a_backend_outside_sync_tensor_has_no_scope() {
    let p = pipeline("[a]\nbackend = \"Held\"\n", PipelineOptions::default());
    let out = p.run(vec![text("x")]).unwrap();
    assert_eq!(result_text(&out[0]).unwrap(), "no scope");
    let p = pipeline(
        "[a]\nbackend = \"Sequential[SyncTensor[Held],Held]\"\n",
        PipelineOptions::default(),
    );
    let out = p.run(vec![text("x")]).unwrap();
    assert_eq!(result_text(&out[0]).unwrap(), "no scope");
}

#[test]
fn shutdown_answers_every_call_in_flight_through_sync_tensor() {
    let mut p = pipeline(
        "batching_timeout = 1\n[s]\nbackend = \"SyncTensor[Sequential[Held,Sleep]]\"\n\
         sleep_ms = 20\nmax = 4\ninstance_num = 2\n",
        PipelineOptions::default(),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..40 {
        let tx = tx.clone();
        p.submit(vec![text(&i.to_string())], move |out| {
            let _ = tx.send((i, out));
        })
        .unwrap();
    }
    drop(tx);
    // 40 items, 2 instances × 4 per 20 ms batch: about 100 ms of work, well inside the grace.
    p.shutdown(Duration::from_secs(5));
    let mut answered: Vec<usize> = Vec::new();
    while let Ok((i, out)) = rx.recv_timeout(Duration::from_secs(1)) {
        assert_eq!(result_text(&out[0]).unwrap(), format!("{i}+"));
        answered.push(i);
    }
    answered.sort_unstable();
    assert_eq!(answered, (0..40).collect::<Vec<_>>());
}
