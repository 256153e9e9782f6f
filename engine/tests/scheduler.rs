//! The scheduler end to end (docs/architecture.md#the-engine-items-backends-scheduler): batching, parallel instances, bucketing, fan-out and
//! join, filters, bounded queues, multi-item requests, Jump, and fault isolation.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use engine::backend::{Backend, InitContext, Registry};
use engine::{
    BackendError, Config, ConfigError, Item, Outcome, Pipeline, PipelineOptions, RequestError,
    Value,
};

/// Records which instance ran the item and in a batch of how many.
struct Probe {
    instance: usize,
}

fn probe(ctx: &InitContext<'_>) -> Result<Box<dyn Backend>, ConfigError> {
    Ok(Box::new(Probe {
        instance: ctx.instance,
    }))
}

impl Backend for Probe {
    fn forward(&mut self, batch: &mut [Item]) -> Result<(), BackendError> {
        let n = batch.len();
        for item in batch.iter_mut() {
            item.extras
                .insert("instance".into(), Value::Text(self.instance.to_string()));
            item.extras
                .insert("batch".into(), Value::Text(n.to_string()));
            item.result = Some(std::mem::take(&mut item.data));
        }
        Ok(())
    }
}

/// Appends its node's `tag` to the text it receives; fails items whose text is "fail-<tag>",
/// panics on "panic", and fails the whole batch on "batch-error".
struct Tag(String);

const TAG_KEYS: &[engine::backend::Key] = &[engine::backend::key(
    "tag",
    "text",
    "?",
    "appended to each result",
)];

fn tag(ctx: &InitContext<'_>) -> Result<Box<dyn Backend>, ConfigError> {
    Ok(Box::new(Tag(ctx.params().str_or("tag", "?").to_string())))
}

impl Backend for Tag {
    fn forward(&mut self, batch: &mut [Item]) -> Result<(), BackendError> {
        if batch
            .iter()
            .any(|i| matches!(&i.data, Value::Text(t) if t == "batch-error"))
        {
            return Err(BackendError::new("refused the batch"));
        }
        for item in batch.iter_mut() {
            match &item.data {
                Value::Text(t) if *t == format!("fail-{}", self.0) => {
                    item.fail(format!("{} cannot", self.0))
                }
                Value::Text(t) if t == "panic" => panic!("injected panic"),
                Value::Text(t) => item.result = Some(Value::Text(format!("{t}{}", self.0))),
                other => item.fail(format!("not text: {}", other.kind())),
            }
        }
        Ok(())
    }
}

/// Answers at once but takes 1.5 s to drop (as a GPU decoder freeing its nvJPEG states and
/// pinned buffers); counts its drops in SLOW_DROPS.
struct SlowDrop;

static SLOW_DROPS: AtomicUsize = AtomicUsize::new(0);

fn slow_drop(_: &InitContext<'_>) -> Result<Box<dyn Backend>, ConfigError> {
    Ok(Box::new(SlowDrop))
}

impl Backend for SlowDrop {
    fn forward(&mut self, batch: &mut [Item]) -> Result<(), BackendError> {
        for item in batch.iter_mut() {
            item.result = Some(std::mem::take(&mut item.data));
        }
        Ok(())
    }
}

impl Drop for SlowDrop {
    fn drop(&mut self) {
        std::thread::sleep(Duration::from_millis(1500));
        SLOW_DROPS.fetch_add(1, Ordering::SeqCst);
    }
}

fn registry() -> Registry {
    let mut r = Registry::with_defaults();
    r.register("Probe", probe, &[]);
    r.register("Tag", tag, TAG_KEYS);
    r.register("SlowDrop", slow_drop, &[]);
    r
}

fn pipeline(toml: &str) -> Pipeline {
    pipeline_with(toml, PipelineOptions::default())
}

fn pipeline_with(toml: &str, options: PipelineOptions) -> Pipeline {
    let config = Config::parse(toml, Path::new("test.toml")).unwrap();
    Pipeline::build(config, registry(), options).unwrap()
}

/// Submits one item as a request and waits up to `within` for its outcomes (the test fails
/// if none come by then).
fn answer_within(p: &Pipeline, item: Item, within: Duration) -> Vec<Outcome> {
    let (tx, rx) = std::sync::mpsc::channel();
    p.submit(vec![item], move |out| {
        let _ = tx.send(out);
    })
    .unwrap();
    rx.recv_timeout(within).unwrap()
}

fn text(s: &str) -> Item {
    Item::new(Value::Text(s.into()))
}

fn result_text(o: &Result<Item, RequestError>) -> String {
    match o {
        Ok(item) => match &item.result {
            Some(Value::Text(t)) => t.clone(),
            other => panic!("unexpected result {other:?}"),
        },
        Err(e) => panic!("item failed: {e}"),
    }
}

fn extra(item: &Item, key: &str) -> usize {
    match item.extras.get(key) {
        Some(Value::Text(t)) => t.parse().unwrap(),
        other => panic!("no {key}: {other:?}"),
    }
}

#[test]
fn a_batch_closes_at_max_never_above() {
    let p = pipeline("[n]\nbackend = \"Probe\"\nmax = 4\nbatching_timeout = 200\n");
    let out = p
        .run((0..10).map(|i| text(&i.to_string())).collect())
        .unwrap();
    let sizes: Vec<usize> = out
        .iter()
        .map(|o| extra(o.as_ref().unwrap(), "batch"))
        .collect();
    assert!(sizes.iter().all(|&s| s <= 4), "{sizes:?}");
    // 10 items queued at once: two full batches, then the last 2 (nothing more can come).
    assert_eq!(sizes.iter().filter(|&&s| s == 4).count(), 8, "{sizes:?}");
    assert_eq!(&sizes[8..], [2, 2]);
    let stats = p.stats();
    assert_eq!(stats[0].batch_sizes[4], 2);
    assert_eq!(stats[0].batch_sizes[2], 1);
}

/// `[a]` sleeps `sleep_ms` per item (one instance), then `[n]` batches up to 8 with
/// `timeout_ms` of batching timeout.
fn sleep_then_batch(sleep_ms: u64, timeout_ms: u64) -> Pipeline {
    pipeline(&format!(
        "[a]\nbackend = \"Sleep\"\nsleep_ms = {sleep_ms}\nnext = \"n\"\n\
         [n]\nbackend = \"Probe\"\nmax = 8\nbatching_timeout = {timeout_ms}\n"
    ))
}

#[test]
fn a_request_that_cannot_fill_a_batch_is_not_held_for_one() {
    // Adaptive batching: 3 items, nothing else in flight: one batch of 3 at once, not after
    // the 5 s timeout; likewise a lone item behind another node.
    let p = pipeline("[n]\nbackend = \"Probe\"\nmax = 8\nbatching_timeout = 5000\n");
    let started = Instant::now();
    let out = p.run(vec![text("a"), text("b"), text("c")]).unwrap();
    for o in &out {
        assert_eq!(extra(o.as_ref().unwrap(), "batch"), 3);
    }
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "waited for the timeout"
    );
    let p = sleep_then_batch(5, 5000);
    let started = Instant::now();
    let out = p.run(vec![text("x")]).unwrap();
    assert_eq!(extra(out[0].as_ref().unwrap(), "batch"), 1);
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "waited for the timeout"
    );
}

#[test]
fn a_partial_batch_waits_for_items_still_upstream() {
    // [a] runs one item at a time (100 ms each): when the first reaches [n] the second is still
    // held by [a], so [n] waits for it and runs both as one batch, long before its timeout.
    let p = sleep_then_batch(100, 5000);
    let started = Instant::now();
    let out = p.run(vec![text("x"), text("y")]).unwrap();
    for o in &out {
        assert_eq!(extra(o.as_ref().unwrap(), "batch"), 2);
    }
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "waited for the timeout"
    );
}

#[test]
fn a_partial_batch_waits_no_longer_than_the_timeout() {
    // The second item spends 400 ms in [a] after the first reached [n]: [n] gives up on it
    // after its 100 ms timeout, so each goes in a batch of one.
    let p = sleep_then_batch(400, 100);
    let out = p.run(vec![text("x"), text("y")]).unwrap();
    for o in &out {
        assert_eq!(extra(o.as_ref().unwrap(), "batch"), 1);
    }
    assert_eq!(p.stats()[1].batch_sizes[1], 2);
}

#[test]
fn instances_run_in_parallel() {
    let p = pipeline("[s]\nbackend = \"Sleep\"\nsleep_ms = 300\ninstance_num = 4\n");
    let started = Instant::now();
    let out = p
        .run((0..4).map(|i| text(&i.to_string())).collect())
        .unwrap();
    let took = started.elapsed();
    assert!(out.iter().all(|o| o.is_ok()));
    // Four 300 ms sleeps on four instances: about one sleep, far from four.
    assert!(took < Duration::from_millis(800), "took {took:?}");
}

#[test]
fn bucketing_sends_each_batch_to_an_instance_whose_range_fits() {
    let toml = "[n]\nbackend = \"Probe\"\ninstance_num = 2\nmin = \"1;5\"\nmax = \"4;8\"\nbatching_timeout = 100\n";
    let p = pipeline(toml);
    let out = p
        .run((0..6).map(|i| text(&i.to_string())).collect())
        .unwrap();
    for o in &out {
        let item = o.as_ref().unwrap();
        assert_eq!((extra(item, "instance"), extra(item, "batch")), (1, 6));
    }
    let out = p.run(vec![text("x"), text("y")]).unwrap();
    for o in &out {
        let item = o.as_ref().unwrap();
        assert_eq!((extra(item, "instance"), extra(item, "batch")), (0, 2));
    }
}

#[test]
fn items_flow_through_a_chain_of_nodes() {
    let p = pipeline(
        "[a]\nbackend = \"Tag\"\ntag = \"A\"\nnext = \"b\"\n[b]\nbackend = \"Tag\"\ntag = \"B\"\nnext = \"c\"\n[c]\nbackend = \"Tag\"\ntag = \"C\"\n",
    );
    assert_eq!(p.entry_nodes(), ["a"]);
    let out = p.run(vec![text("x"), text("y")]).unwrap();
    assert_eq!(result_text(&out[0]), "xABC");
    assert_eq!(result_text(&out[1]), "yABC");
}

#[test]
fn fan_out_and_map_join() {
    let p = pipeline(
        r#"
        [split]
        backend = "Tag"
        tag = "S"
        next = "left,right"
        [left]
        backend = "Tag"
        tag = "L"
        next = "join"
        [right]
        backend = "Tag"
        tag = "R"
        next = "join"
        [join]
        backend = "Identity"
        map = "left[result:data],right[result:right_result]"
        "#,
    );
    let out = p.run(vec![text("x")]).unwrap();
    let item = out[0].as_ref().unwrap();
    assert!(
        matches!(&item.result, Some(Value::Text(t)) if t == "xSL"),
        "{item:?}"
    );
    assert!(
        matches!(item.extras.get("right_result"), Some(Value::Text(t)) if t == "xSR"),
        "{item:?}"
    );
    // A branch that fails fails the joined item, once.
    let out = p.run(vec![text("fail-S")]).unwrap();
    assert!(out[0].is_err());
}

#[test]
fn fan_out_must_meet_at_a_map_node() {
    let toml = "[a]\nbackend = \"Identity\"\nnext = \"b,c\"\n[b]\nbackend = \"Identity\"\n[c]\nbackend = \"Identity\"\n";
    let config = Config::parse(toml, Path::new("t.toml")).unwrap();
    let e = Pipeline::build(config, registry(), PipelineOptions::default())
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("meet again at a node with `map`"),
        "{e}"
    );
}

#[test]
fn cycles_and_unknown_backends_are_load_errors() {
    let toml =
        "[a]\nbackend = \"Identity\"\nnext = \"b\"\n[b]\nbackend = \"Identity\"\nnext = \"a\"\n";
    let config = Config::parse(toml, Path::new("t.toml")).unwrap();
    let e = Pipeline::build(config, registry(), PipelineOptions::default())
        .err()
        .unwrap();
    assert!(
        e.to_string()
            .contains("no cycles between nodes; found a -> b -> a"),
        "{e}"
    );

    let toml = "[a]\nbackend = \"SyncTensor[Sequential[ResizeMat,cvtColourMat]]\"\n";
    let config = Config::parse(toml, Path::new("t.toml")).unwrap();
    let e = Pipeline::build(config, registry(), PipelineOptions::default())
        .err()
        .unwrap();
    let msg = e.to_string();
    assert!(
        msg.contains("unknown backend `cvtColourMat`; did you mean `cvtColorMat`?"),
        "{msg}"
    );
    assert!(
        msg.contains("known backends: CropMat, CropTensor, CvtColorMat, CvtColorTensor, DecodeMat"),
        "{msg}"
    );
}

#[test]
fn each_filter() {
    let chain = |filter: &str| {
        pipeline(&format!(
            "[a]\nbackend = \"Tag\"\ntag = \"A\"\nnext = \"b\"\n[b]\nbackend = \"Tag\"\ntag = \"B\"\nfilter = \"{filter}\"\nnext = \"c\"\n[c]\nbackend = \"Tag\"\ntag = \"C\"\n"
        ))
    };
    // swap (default) and Run: b runs; Run works on `data` as it was.
    assert_eq!(
        result_text(&chain("swap").run(vec![text("x")]).unwrap()[0]),
        "xABC"
    );
    assert_eq!(
        result_text(&chain("Run").run(vec![text("x")]).unwrap()[0]),
        "xBC"
    );
    // Skip: b does not run, the item goes on to c.
    assert_eq!(
        result_text(&chain("Skip").run(vec![text("x")]).unwrap()[0]),
        "xAC"
    );
    // SerialSkip and Break: the item completes at b with a's result.
    assert_eq!(
        result_text(&chain("SerialSkip").run(vec![text("x")]).unwrap()[0]),
        "xA"
    );
    assert_eq!(
        result_text(&chain("Break").run(vec![text("x")]).unwrap()[0]),
        "xA"
    );
    // Error: the item fails, naming the node.
    let out = chain("Error").run(vec![text("x")]).unwrap();
    assert_eq!(
        out[0].as_ref().unwrap_err(),
        &RequestError::Filtered("b".into())
    );
    // or: b runs only when a produced nothing.
    let p = chain("or");
    assert_eq!(result_text(&p.run(vec![text("x")]).unwrap()[0]), "xAC");
    assert_eq!(
        result_text(&p.run(vec![text("fail-A")]).unwrap()[0]),
        "fail-ABC"
    );
    // swap with no result: the item ends with an error naming the node and its reason.
    let out = chain("swap").run(vec![text("fail-A")]).unwrap();
    assert_eq!(
        out[0].as_ref().unwrap_err().to_string(),
        "node [a] produced no result: A cannot"
    );
}

#[test]
fn jump_hands_items_to_a_sub_graph() {
    let p = pipeline(
        r#"
        [main]
        backend = "Jump[sub]"
        [sub]
        backend = "Tag"
        tag = "S"
        next = "sub2"
        [sub2]
        backend = "Tag"
        tag = "T"
        "#,
    );
    let mut item = text("x");
    item.node_name = Some("main".into());
    let out = p.run(vec![item]).unwrap();
    assert_eq!(result_text(&out[0]), "xST");
}

#[test]
fn a_full_queue_refuses_at_once() {
    let p = pipeline("[s]\nbackend = \"Sleep\"\nsleep_ms = 200\nqueue_size = 3\n");
    let (tx, rx) = std::sync::mpsc::channel();
    // One item runs, three wait: the queue is full.
    let mut admitted = 0;
    let mut refused = 0;
    for i in 0..8 {
        let tx = tx.clone();
        match p.submit(vec![text(&i.to_string())], move |o| {
            let _ = tx.send(o);
        }) {
            Ok(()) => admitted += 1,
            Err(RequestError::Overloaded { node, capacity }) => {
                assert_eq!((node.as_str(), capacity), ("s", 3));
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(refused >= 4, "admitted {admitted}, refused {refused}");
    for _ in 0..admitted {
        let out = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(out[0].is_ok());
    }
}

#[test]
fn a_request_that_outlives_its_deadline_times_out() {
    // Alone, and inside SyncTensor (which waits for its stream after the inner forward).
    for backend in ["Sleep", "SyncTensor[Sequential[Identity,Sleep]]"] {
        let options = PipelineOptions {
            request_timeout: Duration::from_millis(100),
        };
        let toml = format!("[s]\nbackend = \"{backend}\"\nsleep_ms = 300\n");
        let p = pipeline_with(&toml, options);
        let started = Instant::now();
        let out = p.run(vec![text("a"), text("b")]).unwrap();
        // Answered at the deadline: the first item still running, the second still queued.
        assert!(started.elapsed() < Duration::from_millis(250), "{backend}");
        for o in &out {
            assert!(
                matches!(o, Err(RequestError::Timeout { .. })),
                "{backend}: {o:?}"
            );
        }
    }
}

#[test]
fn a_queued_item_times_out_while_every_instance_is_busy() {
    // The only instance sleeps 1 s on the first request; the second, queued behind it with a
    // 100 ms deadline, fails at its deadline, not when the instance frees up (and so does the
    // first, whose instance still runs it).
    let options = PipelineOptions {
        request_timeout: Duration::from_millis(100),
    };
    let p = pipeline_with("[s]\nbackend = \"Sleep\"\nsleep_ms = 1000\n", options);
    let (tx, rx) = std::sync::mpsc::channel();
    let first = tx.clone();
    p.submit(vec![text("a")], move |out| {
        let _ = first.send(("a", out));
    })
    .unwrap();
    let started = Instant::now();
    p.submit(vec![text("b")], move |out| {
        let _ = tx.send(("b", out));
    })
    .unwrap();
    let mut answered = Vec::new();
    for _ in 0..2 {
        let (who, out) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let took = started.elapsed();
        assert!(
            matches!(out[0], Err(RequestError::Timeout { .. })),
            "{who}: {:?}",
            out[0]
        );
        assert!(
            took < Duration::from_millis(700),
            "{who} failed only after {took:?}"
        );
        answered.push(who);
    }
    answered.sort();
    assert_eq!(answered, ["a", "b"]);
}

#[test]
fn a_multi_item_request_completes_once_with_every_item() {
    let p = pipeline("[a]\nbackend = \"Tag\"\ntag = \"A\"\ninstance_num = 3\nmax = 2\n");
    let calls = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = std::sync::mpsc::channel();
    let c = calls.clone();
    let items = vec![text("1"), text("fail-A"), text("3"), text("4"), text("5")];
    p.submit(items, move |out| {
        c.fetch_add(1, Ordering::SeqCst);
        let _ = tx.send(out);
    })
    .unwrap();
    let out = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(out.len(), 5);
    assert_eq!(result_text(&out[0]), "1A");
    assert!(out[1].is_err());
    assert_eq!(result_text(&out[4]), "5A");
}

#[test]
fn a_panicking_backend_fails_its_batch_and_the_instance_comes_back() {
    let p = pipeline("[a]\nbackend = \"Tag\"\ntag = \"A\"\ninstance_num = 2\n");
    // A marked item among others in flight: only its own batch (of one) fails.
    let mut items: Vec<Item> = (0..20).map(|i| text(&i.to_string())).collect();
    items[5] = text("panic");
    let out = p.run(items).unwrap();
    for (i, o) in out.iter().enumerate() {
        if i == 5 {
            let e = o.as_ref().unwrap_err().to_string();
            assert!(e.contains("panicked: injected panic"), "{e}");
        } else {
            assert_eq!(result_text(o), format!("{i}A"));
        }
    }
    let out = p.run(vec![text("batch-error")]).unwrap();
    assert!(out[0]
        .as_ref()
        .unwrap_err()
        .to_string()
        .contains("refused the batch"));
    // The node counts both instances again, and both serve.
    let until = Instant::now() + Duration::from_secs(5);
    while p.stats()[0].instances != 2 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(p.stats()[0].instances, 2);
    let out = p
        .run((0..20).map(|i| text(&i.to_string())).collect())
        .unwrap();
    assert!(out.iter().all(|o| o.is_ok()));
}

#[test]
fn unknown_entry_node_is_refused() {
    let p = pipeline("[a]\nbackend = \"Identity\"\n");
    let mut item = text("x");
    item.node_name = Some("b".into());
    assert_eq!(
        p.run(vec![item]).unwrap_err(),
        RequestError::UnknownNode("b".into())
    );
}

#[test]
fn many_concurrent_requests_all_complete() {
    let p = Arc::new(pipeline(
        "batching_timeout = 1\n[a]\nbackend = \"Tag\"\ntag = \"A\"\nmax = 8\ninstance_num = 2\nnext = \"b\"\n[b]\nbackend = \"Tag\"\ntag = \"B\"\nmax = 4\n",
    ));
    let done = Arc::new(Mutex::new(0usize));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let p = p.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    let s = format!("{t}-{i}");
                    let out = p.run(vec![text(&s)]).unwrap();
                    assert_eq!(result_text(&out[0]), format!("{s}AB"));
                    *done.lock().unwrap() += 1;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(*done.lock().unwrap(), 1600);
    // A request stops counting as in flight just after its answer is handed over (the caller
    // may run first): wait for the last ones, boundedly.
    let until = Instant::now() + Duration::from_secs(5);
    while p.in_flight() > 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(p.in_flight(), 0);
}

#[test]
fn a_hung_backend_fails_its_request_within_the_timeout() {
    // The only instance sleeps 3 s (as a backend that hangs); the request's 200 ms timeout
    // answers it while the instance still holds its item, naming the node.
    let options = PipelineOptions {
        request_timeout: Duration::from_millis(200),
    };
    let p = pipeline_with("[stuck]\nbackend = \"Sleep\"\nsleep_ms = 3000\n", options);
    let started = Instant::now();
    let out = answer_within(&p, text("a"), Duration::from_secs(5));
    let took = started.elapsed();
    match &out[0] {
        Err(RequestError::Timeout { node, waited_ms }) => {
            assert_eq!(node, "stuck");
            assert!(*waited_ms >= 200, "{waited_ms}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        took < Duration::from_millis(1000),
        "answered only after {took:?}"
    );
    assert_eq!(p.in_flight(), 1, "the instance still holds the item");
}

#[test]
fn shutdown_does_not_wait_for_a_hung_instance_forever() {
    let options = PipelineOptions {
        request_timeout: Duration::from_millis(100),
    };
    let mut p = pipeline_with("[stuck]\nbackend = \"Sleep\"\nsleep_ms = 10000\n", options);
    assert!(answer_within(&p, text("a"), Duration::from_secs(5))[0].is_err());
    let started = Instant::now();
    p.shutdown(Duration::from_millis(100));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
}

#[test]
fn shutdown_waits_for_instances_that_are_releasing_their_resources() {
    // Past their last batch, two instances take 1.5 s each to drop their backend: longer than
    // the second a hung batch gets, and not hung. Shutdown waits for both.
    let mut p = pipeline("[slow]\nbackend = \"SlowDrop\"\ninstance_num = 2\n");
    assert!(answer_within(&p, text("a"), Duration::from_secs(5))[0].is_ok());
    let started = Instant::now();
    p.shutdown(Duration::from_millis(100));
    let took = started.elapsed();
    assert_eq!(SLOW_DROPS.load(Ordering::SeqCst), 2, "after {took:?}");
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
}

#[test]
fn an_expired_request_names_the_node_holding_each_unfinished_item() {
    // Two entry nodes: "b" sits in [stuck] past the 200 ms deadline; "a", entering [fast]
    // after it, is answered at once. The answer keeps a's result and names [stuck] for b (not
    // the node the request entered last).
    let options = PipelineOptions {
        request_timeout: Duration::from_millis(200),
    };
    let p = pipeline_with(
        "[fast]\nbackend = \"Tag\"\ntag = \"F\"\n\
         [stuck]\nbackend = \"Sleep\"\nsleep_ms = 3000\n",
        options,
    );
    let mut a = text("a");
    a.node_name = Some("fast".into());
    let mut b = text("b");
    b.node_name = Some("stuck".into());
    let out = p.run(vec![b, a]).unwrap();
    match &out[0] {
        Err(RequestError::Timeout { node, .. }) => assert_eq!(node, "stuck"),
        other => panic!("{other:?}"),
    }
    assert_eq!(result_text(&out[1]), "aF");
}
