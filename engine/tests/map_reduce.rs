//! `MapReduce` end to end: one item split into children (0, 1, many) that run through a
//! sub-graph, batched with other requests' children, gathered back in order; a failing child
//! fails its parent and its unrun siblings are dropped; the request's deadline bounds every
//! child; and `map` reading nodes the item passed before.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use engine::backend::{Backend, InitContext, Registry};
use engine::{
    BackendError, Config, ConfigError, Item, Outcome, Pipeline, PipelineOptions, RequestError,
    Tensor, Value,
};

/// `"a,b,c"` → a list of the texts between commas (`""` → an empty list).
struct Split;

fn split(_: &InitContext<'_>) -> Result<Box<dyn Backend>, ConfigError> {
    Ok(Box::new(Split))
}

impl Backend for Split {
    fn forward(&mut self, batch: &mut [Item]) -> Result<(), BackendError> {
        for item in batch.iter_mut() {
            let Value::Text(t) = &item.data else {
                item.fail("not text");
                continue;
            };
            let parts = t
                .split(',')
                .filter(|p| !p.is_empty())
                .map(|p| Value::Text(p.into()))
                .collect();
            item.result = Some(Value::List(parts));
        }
        Ok(())
    }
}

/// Appends `tag` to text, records the size of the batch it ran in (`batch`), fails text that
/// starts with "fail", and sleeps `ms` per batch. Counts the items it ran in the static its
/// `counter` names.
struct Child {
    tag: String,
    ms: u64,
    counter: &'static AtomicUsize,
}

static RUN_A: AtomicUsize = AtomicUsize::new(0);
static RUN_B: AtomicUsize = AtomicUsize::new(0);
static RUN_C: AtomicUsize = AtomicUsize::new(0);

const CHILD_KEYS: &[engine::backend::Key] = &[
    engine::backend::key("tag", "text", "", "appended"),
    engine::backend::key("ms", "ms", "0", "sleep per batch"),
    engine::backend::key("counter", "a, b or c", "a", "which static counts the runs"),
];

fn child(ctx: &InitContext<'_>) -> Result<Box<dyn Backend>, ConfigError> {
    let p = ctx.params();
    let counter = match p.str_or("counter", "a") {
        "b" => &RUN_B,
        "c" => &RUN_C,
        _ => &RUN_A,
    };
    Ok(Box::new(Child {
        tag: p.str_or("tag", "").to_string(),
        ms: p.usize_or("ms", 0)? as u64,
        counter,
    }))
}

impl Backend for Child {
    fn forward(&mut self, batch: &mut [Item]) -> Result<(), BackendError> {
        std::thread::sleep(Duration::from_millis(self.ms));
        let n = batch.len();
        for item in batch.iter_mut() {
            self.counter.fetch_add(1, Ordering::SeqCst);
            item.extras
                .insert("batch".into(), Value::Text(n.to_string()));
            match &item.data {
                Value::Text(t) if t.starts_with("fail") => item.fail(format!("{t} refused")),
                Value::Text(t) => item.result = Some(Value::Text(format!("{t}{}", self.tag))),
                other => item.result = Some(other.clone()),
            }
        }
        Ok(())
    }
}

fn registry() -> Registry {
    let mut r = Registry::with_defaults();
    r.register("Split", split, &[]);
    r.register("Child", child, CHILD_KEYS);
    r
}

fn pipeline(toml: &str, timeout: Duration) -> Pipeline {
    let config = Config::parse(toml, Path::new("test.toml")).unwrap();
    let options = PipelineOptions {
        request_timeout: timeout,
    };
    Pipeline::build(config, registry(), options).unwrap()
}

fn load_error(toml: &str) -> String {
    let config = match Config::parse(toml, Path::new("test.toml")) {
        Ok(c) => c,
        Err(e) => return e.to_string(),
    };
    match Pipeline::build(config, registry(), PipelineOptions::default()) {
        Ok(_) => panic!("loaded: {toml}"),
        Err(e) => e.to_string(),
    }
}

const SPLIT_TAG: &str = r#"
[split]
backend = "Split"
next = "each"

[each]
backend = "MapReduce"
jump = "tag"
split = "data"
merge = "result,batch"

[tag]
backend = "Child"
tag = "!"
max = 8
batching_timeout = 100
"#;

/// Split, then each child through one instance that takes `ms` a child, one at a time, counted
/// by `counter`.
fn one_at_a_time(ms: u64, counter: &str, timeout: Duration) -> Pipeline {
    let toml = format!(
        "[split]\nbackend = \"Split\"\nnext = \"each\"\n\
         [each]\nbackend = \"MapReduce\"\njump = \"slow\"\nsplit = \"data\"\nmerge = \"result\"\n\
         [slow]\nbackend = \"Child\"\nms = {ms}\nmax = 1\ncounter = \"{counter}\"\n"
    );
    pipeline(&toml, timeout)
}

fn texts(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::List(values)) => values
            .iter()
            .map(|v| match v {
                Value::Text(t) => t.clone(),
                other => panic!("not text: {other:?}"),
            })
            .collect(),
        other => panic!("not a list: {other:?}"),
    }
}

fn run(p: &Pipeline, text: &str) -> Outcome {
    p.run(vec![Item::new(Value::Text(text.into()))])
        .unwrap()
        .remove(0)
}

#[test]
fn children_are_gathered_back_in_order_for_zero_one_and_many() {
    let p = pipeline(SPLIT_TAG, Duration::from_secs(5));
    for (input, want) in [
        ("", vec![]),
        ("a", vec!["a!"]),
        ("a,b,c,d,e", vec!["a!", "b!", "c!", "d!", "e!"]),
    ] {
        let item = run(&p, input).unwrap();
        assert_eq!(texts(item.result.as_ref()), want, "input {input:?}");
        assert_eq!(texts(item.extras.get("batch")).len(), want.len());
    }
}

#[test]
fn children_of_different_requests_share_batches() {
    let p = pipeline(SPLIT_TAG, Duration::from_secs(5));
    let (tx, rx) = std::sync::mpsc::channel();
    let items: Vec<Item> = (0..3)
        .map(|_| Item::new(Value::Text("a,b,c".into())))
        .collect();
    // One request of three items: nine children, each item's three alone could batch 3.
    p.submit(items, move |out| {
        let _ = tx.send(out);
    })
    .unwrap();
    let out = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let largest = out
        .iter()
        .flat_map(|o| texts(o.as_ref().unwrap().extras.get("batch")))
        .map(|b| b.parse::<usize>().unwrap())
        .max()
        .unwrap();
    assert!(
        largest > 3,
        "largest batch {largest}: children were not batched together"
    );
    for o in &out {
        assert_eq!(
            texts(o.as_ref().unwrap().result.as_ref()),
            ["a!", "b!", "c!"]
        );
    }
}

#[test]
fn a_failing_child_fails_its_parent_and_its_unrun_siblings_are_dropped() {
    let p = one_at_a_time(50, "b", Duration::from_secs(5));
    let started = Instant::now();
    let out = run(&p, "fail-first,b,c,d,e,f,g,h");
    let took = started.elapsed();
    match out {
        Err(RequestError::NoResult { node, reason }) => {
            assert_eq!(node, "slow");
            assert!(reason.contains("fail-first refused"), "{reason}");
        }
        other => panic!("expected the child's failure, got {other:?}"),
    }
    assert!(took < Duration::from_millis(300), "answered after {took:?}");
    std::thread::sleep(Duration::from_millis(500));
    // The failing child ran, and at most the one sibling already dispatched with it.
    let ran = RUN_B.load(Ordering::SeqCst);
    assert!(ran <= 2, "{ran} children ran after their parent failed");
}

#[test]
fn the_request_deadline_bounds_every_child() {
    let p = one_at_a_time(60, "c", Duration::from_millis(150));
    let started = Instant::now();
    let out = run(&p, "a,b,c,d,e,f,g,h,i,j");
    assert!(
        matches!(out, Err(RequestError::Timeout { ref node, .. }) if node == "slow"),
        "{out:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(400));
    std::thread::sleep(Duration::from_millis(800));
    // 150 ms at 60 ms a child: three ran at most; the rest never ran.
    let ran = RUN_C.load(Ordering::SeqCst);
    assert!(
        ran <= 3,
        "{ran} of 10 children ran past their request's deadline"
    );
}

#[test]
fn a_tensor_splits_into_its_rows() {
    let toml = r#"
        [first]
        backend = "Identity"
        next = "each"
        [each]
        backend = "MapReduce"
        jump = "row"
        split = "data"
        merge = "result"
        [row]
        backend = "Identity"
    "#;
    let p = pipeline(toml, Duration::from_secs(5));
    let t = Tensor::new(vec![3, 2], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let item = p
        .run(vec![Item::new(Value::Tensor(t))])
        .unwrap()
        .remove(0)
        .unwrap();
    let Some(Value::List(rows)) = item.result else {
        panic!("{:?}", item.result)
    };
    let rows: Vec<Vec<f32>> = rows
        .into_iter()
        .map(|r| match r {
            Value::Tensor(t) => {
                assert_eq!(t.shape, [2]);
                t.data
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(rows, [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]);
}

#[test]
fn map_reads_a_node_the_item_passed_before() {
    let toml = r#"
        [a]
        backend = "Child"
        tag = "A"
        next = "b"
        [b]
        backend = "Child"
        tag = "B"
        next = "c"
        [c]
        backend = "Child"
        tag = "C"
        map = "a[result:data],b[result:seen]"
    "#;
    let p = pipeline(toml, Duration::from_secs(5));
    let item = run(&p, "x").unwrap();
    assert!(
        matches!(&item.result, Some(Value::Text(t)) if t == "xAC"),
        "{item:?}"
    );
    assert!(matches!(item.extras.get("seen"), Some(Value::Text(t)) if t == "xAB"));
}

#[test]
fn children_read_what_their_parent_passed_through() {
    // The sub-graph crops "the original" (here: the request's text, kept at [first]) with each
    // child's part, as a crop node reads the decoded image and one box.
    let toml = r#"
        [first]
        backend = "Identity"
        next = "split"
        [split]
        backend = "Split"
        next = "each"
        [each]
        backend = "MapReduce"
        jump = "use"
        split = "part"
        merge = "result"
        map = "first[result:original],split[result:part]"
        [use]
        backend = "Child"
        tag = "+"
        map = "first[result:data]"
    "#;
    let p = pipeline(toml, Duration::from_secs(5));
    let item = run(&p, "p,q").unwrap();
    assert_eq!(texts(item.result.as_ref()), ["p,q+", "p,q+"]);
    assert_eq!(texts(item.extras.get("part")), ["p", "q"]);
}

#[test]
fn a_request_cannot_enter_at_a_map_reduce_node() {
    let p = pipeline(SPLIT_TAG, Duration::from_secs(5));
    let mut item = Item::new(Value::Text("a".into()));
    item.node_name = Some("each".into());
    let e = p.run(vec![item]).unwrap_err();
    assert!(e.to_string().contains("MapReduce node"), "{e}");
}

#[test]
fn map_reduce_config_errors_name_the_node_and_key() {
    let base = "[split]\nbackend = \"Split\"\nnext = \"each\"\n[tag]\nbackend = \"Child\"\n";
    let cases = [
        ("[each]\nbackend = \"MapReduce\"\nsplit = \"data\"\nmerge = \"result\"\n", "jump"),
        (
            "[each]\nbackend = \"MapReduce\"\njump = \"nowhere\"\nsplit = \"data\"\nmerge = \"result\"\n",
            "nowhere",
        ),
        ("[each]\nbackend = \"MapReduce\"\njump = \"tag\"\nmerge = \"result\"\n", "split"),
        ("[each]\nbackend = \"MapReduce\"\njump = \"tag\"\nsplit = \"data\"\n", "merge"),
        (
            "[each]\nbackend = \"Sequential[MapReduce,Identity]\"\n",
            "MapReduce` alone",
        ),
        (
            "[each]\nbackend = \"MapReduce\"\njump = \"tag\"\nsplit = \"data\"\nmerge = \"result\"\nsplitt = \"x\"\n",
            "splitt",
        ),
    ];
    for (each, want) in cases {
        let e = load_error(&format!("{base}{each}"));
        assert!(e.contains("[each]") || e.contains("each"), "{e}");
        assert!(e.contains(want), "wanted {want:?} in: {e}");
    }
    // The sub-graph must not lead back to its MapReduce node.
    let e = load_error(
        "[split]\nbackend = \"Split\"\nnext = \"each\"\n[each]\nbackend = \"MapReduce\"\njump = \"tag\"\nsplit = \"data\"\nmerge = \"result\"\n[tag]\nbackend = \"Child\"\nnext = \"each\"\n",
    );
    assert!(e.contains("cycle") || e.contains("sub-graph"), "{e}");
    // A `map` source the item never passed.
    let e = load_error(
        "[a]\nbackend = \"Identity\"\nnext = \"b\"\n[b]\nbackend = \"Identity\"\nmap = \"c[result:data]\"\n[c]\nbackend = \"Identity\"\n",
    );
    assert!(e.contains("come before [b]"), "{e}");
}
