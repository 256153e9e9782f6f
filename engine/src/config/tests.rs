use std::path::Path;
use std::time::Duration;

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("test.toml"))
}

#[test]
fn globals_merge_into_nodes_and_nodes_override() {
    let c = parse(
        r#"
        batching_timeout = 5
        instance_num = 8
        precision = "fp16"
        [a]
        backend = "Identity"
        next = "b"
        [b]
        backend = "Identity"
        instance_num = "3"
        batching_timeout = 2.5
        "#,
    )
    .unwrap();
    let a = c.node("a").unwrap();
    let b = c.node("b").unwrap();
    assert_eq!(a.instance_num, 8);
    assert_eq!(a.batching_timeout, Duration::from_millis(5));
    assert_eq!(a.params.raw("precision"), Some("fp16"));
    assert_eq!(b.instance_num, 3, "strings and numbers are the same");
    assert_eq!(b.batching_timeout, Duration::from_micros(2500));
    assert_eq!(a.next, ["b"]);
    assert_eq!(a.filter, Filter::Swap);
    assert_eq!(b.profiles.len(), 3);
    assert_eq!(
        b.profiles[0],
        Profile {
            min: 1,
            max: 1,
            item_shape: None
        }
    );
}

#[test]
fn quoted_keys_with_colons_are_plain_keys() {
    let c = parse(
        r#"
        [m]
        backend = "Identity"
        "model::cache" = "x.trt"
        mean = [1, 2.5, 3]
        "#,
    )
    .unwrap();
    let m = c.node("m").unwrap();
    assert_eq!(m.params.raw("model::cache"), Some("x.trt"));
    assert_eq!(
        m.params.floats("mean", 3).unwrap(),
        Some(vec![1.0, 2.5, 3.0])
    );
}

#[test]
fn per_instance_profiles_and_shapes() {
    let c = parse(
        r#"
        [m]
        backend = "Identity"
        instance_num = 2
        min = "1;5"
        max = "4x3x224x224;8x3x224x224"
        "#,
    )
    .unwrap();
    let m = c.node("m").unwrap();
    assert_eq!(m.profiles[0].min, 1);
    assert_eq!(m.profiles[0].max, 4);
    assert_eq!(m.profiles[1].min, 5);
    assert_eq!(m.profiles[1].max, 8);
    assert_eq!(
        m.profiles[1].item_shape.as_deref(),
        Some(&[3, 224, 224][..])
    );
    assert_eq!(m.max_batch(), 8);
}

fn err(text: &str) -> ConfigError {
    parse(text).unwrap_err()
}

#[test]
fn seed_typo_gets_exactly_the_posdecoder_hint() {
    let seed = include_str!("../../tests/fixtures/seed_resnet50.toml");
    let e = Config::parse(seed, Path::new("resnet50.toml")).unwrap_err();
    assert_eq!(e.node.as_deref(), Some("cpu_decoder"));
    assert_eq!(e.key.as_deref(), Some("next"));
    assert_eq!(e.value.as_deref(), Some("cpu_posprocess"));
    let text = e.to_string();
    assert!(text.contains("did you mean `cpu_posdecoder`?"), "{text}");
    assert!(
        text.starts_with("resnet50.toml: node [cpu_decoder], key `next` = \"cpu_posprocess\""),
        "{text}"
    );
}

#[test]
fn errors_name_file_node_key_value_and_expectation() {
    let e = err("[a]\nbackend = \"Identity\"\ninstance_num = \"many\"\n");
    assert_eq!(
        e.to_string(),
        "test.toml: node [a], key `instance_num` = \"many\": a non-negative integer"
    );
    let e = err("[a]\nbackend = \"Identity\"\ninstance_num = 0\n");
    assert!(e.to_string().contains("an integer from 1 to 1024"), "{e}");
    let e = err("[a]\nbackend = \"Identity\"\nbatching_timeout = -1\n");
    assert_eq!(e.key.as_deref(), Some("batching_timeout"));
    let e = err("[a]\nbackend = \"Identity\"\nmax = \"4;x\"\n");
    assert_eq!(e.key.as_deref(), Some("max"));
    assert!(e.expected.contains("batch size or a shape"), "{e}");
    let e = err("[a]\nbackend = \"Identity\"\ninstance_num = 3\nmax = \"4;8\"\n");
    assert!(e.expected.contains("one per instance (3"), "{e}");
    let e = err("[a]\nbackend = \"Identity\"\nmin = 5\nmax = 4\n");
    assert_eq!(e.key.as_deref(), Some("min"));
    let e = err("[a]\nbackend = \"Identity\"\nmin = 2\nmax = 4\n");
    assert!(e.expected.contains("min = 1"), "{e}");
    let e = err("[a]\nbackend = \"Identity\"\nfilter = \"sometimes\"\n");
    assert!(e.expected.contains("SerialSkip"), "{e}");
    let e = err("[a]\nbackend = \"Sequential[A,\"\n");
    assert_eq!(e.key.as_deref(), Some("backend"));
    let e = err("[a]\nnext = \"b\"\n");
    assert_eq!(e.key.as_deref(), Some("backend"));
    let e = err("x = 1\n");
    assert!(e.expected.contains("at least one [node]"), "{e}");
    let e = err("[a\n");
    assert!(e.expected.starts_with("valid TOML"), "{e}");
}

#[test]
fn missing_model_file_is_a_load_error() {
    let e = err("[m]\nbackend = \"TensorrtTensor\"\nmodel = \"no/such/model.onnx\"\n");
    assert_eq!(e.key.as_deref(), Some("model"));
    assert_eq!(e.value.as_deref(), Some("no/such/model.onnx"));
    assert!(e.expected.contains("an existing file"), "{e}");
}

#[test]
fn unknown_next_without_a_close_name_lists_the_nodes() {
    let e = err("[a]\nbackend = \"Identity\"\nnext = \"zzz\"\n[b]\nbackend = \"Identity\"\n");
    assert!(!e.expected.contains("did you mean"), "{e}");
    assert!(e.expected.contains("(nodes: b)"), "{e}");
}

#[test]
fn map_and_jump_targets_must_exist() {
    let e = err("[a]\nbackend = \"Identity\"\nmap = \"x[result:data]\"\n");
    assert_eq!(e.key.as_deref(), Some("map"));
    let e = err("[a]\nbackend = \"Identity\"\nmap = \"a[result]\"\n");
    assert!(e.expected.contains("source node[from key:to"), "{e}");
    let e = err("[a]\nbackend = \"Jump[nowhere]\"\n");
    assert_eq!(e.key.as_deref(), Some("backend"));
}

#[test]
fn map_parses_sources_and_keys() {
    assert_eq!(
        parse_map("a[result:data], b[result:data.2]").unwrap(),
        vec![
            MapEntry {
                source: "a".into(),
                from: "result".into(),
                to: "data".into()
            },
            MapEntry {
                source: "b".into(),
                from: "result".into(),
                to: "data.2".into()
            },
        ]
    );
    // TorchPipe's several keys of one source, and its constants' names.
    assert_eq!(
        parse_map("d[TASK_RESULT_KEY:data, color:color],p[result:TASK_BOX_KEY]").unwrap(),
        [
            ("d", "result", "data"),
            ("d", "color", "color"),
            ("p", "result", "_box")
        ]
        .map(|(s, f, t)| MapEntry {
            source: s.into(),
            from: f.into(),
            to: t.into()
        })
    );
    assert!(parse_map("a[result:data]x").is_none());
    assert!(parse_map("a[result:data,color]").is_none());
    assert!(parse_map("").is_none());
}

#[test]
fn device_id_is_an_index_or_a_list_and_gpu_0_by_default() {
    let c = parse(
        r#"
        [a]
        backend = "Identity"
        next = "b"
        [b]
        backend = "Identity"
        device_id = 1
        next = "c"
        [c]
        backend = "Identity"
        device_id = " 2, 0 "
        next = "d"
        [d]
        backend = "Identity"
        device_id = [3, 1]
        "#,
    )
    .unwrap();
    assert_eq!(c.node("a").unwrap().device_ids, [0]);
    assert_eq!(c.node("b").unwrap().device_ids, [1]);
    assert_eq!(c.node("c").unwrap().device_ids, [2, 0]);
    assert_eq!(c.node("d").unwrap().device_ids, [3, 1]);
}

#[test]
fn device_id_in_the_global_section_is_every_nodes_default() {
    let c = parse(
        "device_id = \"1,0\"\n[a]\nbackend = \"Identity\"\nnext = \"b\"\n\
         [b]\nbackend = \"Identity\"\ndevice_id = 0\n",
    )
    .unwrap();
    assert_eq!(c.node("a").unwrap().device_ids, [1, 0]);
    assert_eq!(c.node("b").unwrap().device_ids, [0], "a node's own wins");
}

#[test]
fn instances_take_the_listed_gpus_in_turn() {
    let c = parse("[m]\nbackend = \"Identity\"\ninstance_num = 5\ndevice_id = \"0,1\"\n").unwrap();
    let m = c.node("m").unwrap();
    let gpus: Vec<usize> = (0..m.instance_num).map(|i| m.device_of(i)).collect();
    assert_eq!(gpus, [0, 1, 0, 1, 0]);
    let c = parse("[m]\nbackend = \"Identity\"\ninstance_num = 3\ndevice_id = 2\n").unwrap();
    let m = c.node("m").unwrap();
    assert_eq!(
        (0..3).map(|i| m.device_of(i)).collect::<Vec<_>>(),
        [2, 2, 2]
    );
    let c = parse("[m]\nbackend = \"Identity\"\ninstance_num = 2\n").unwrap();
    let m = c.node("m").unwrap();
    assert_eq!((0..2).map(|i| m.device_of(i)).collect::<Vec<_>>(), [0, 0]);
}

#[test]
fn bad_device_ids_name_the_node_the_key_the_value_and_why() {
    let bad = |value: &str| {
        err(&format!(
            "[m]\nbackend = \"Identity\"\ndevice_id = {value}\n"
        ))
    };
    assert_eq!(
        bad("-1").to_string(),
        "test.toml: node [m], key `device_id` = \"-1\": a GPU index (`device_id = 1`) or a \
         comma-separated list of them (`device_id = \"0,1\"`), each a non-negative integer, \
         none repeated: `-1` is not a non-negative integer"
    );
    let e = bad("\"0,-1\"");
    assert!(
        e.expected.ends_with("`-1` is not a non-negative integer"),
        "{e}"
    );
    let e = bad("\"\"");
    assert_eq!(e.value.as_deref(), Some(""));
    assert!(e.expected.ends_with("found nothing"), "{e}");
    let e = bad("\"0,,1\"");
    assert!(e.expected.ends_with("found an empty item"), "{e}");
    let e = bad("\"1,0,1\"");
    assert_eq!(e.value.as_deref(), Some("1,0,1"));
    assert!(e.expected.ends_with("GPU 1 is named twice"), "{e}");
    let e = bad("\"gpu1\"");
    assert!(
        e.expected.ends_with("`gpu1` is not a non-negative integer"),
        "{e}"
    );
    let e = bad("1.5");
    assert!(
        e.expected.ends_with("`1.5` is not a non-negative integer"),
        "{e}"
    );
    let e = err("device_id = \"x\"\n[m]\nbackend = \"Identity\"\n");
    assert_eq!(
        e.node.as_deref(),
        Some("m"),
        "a bad global default fails its nodes"
    );
    assert_eq!(e.key.as_deref(), Some("device_id"));
}

#[test]
fn model_name_is_a_node_key_of_url_safe_characters() {
    let c = parse("[a]\nbackend = \"Identity\"\nmodel_name = \" resnet50.v1 \"\n").unwrap();
    assert_eq!(
        c.node("a").unwrap().model_name.as_deref(),
        Some("resnet50.v1")
    );
    let e = parse("model_name = \"m\"\n[a]\nbackend = \"Identity\"\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("model_name"));
    assert!(e.expected.contains("entry node's table"), "{e}");
    let e = parse("[a]\nbackend = \"Identity\"\nmodel_name = \"a/b\"\n").unwrap_err();
    assert!(e.expected.contains("path segment"), "{e}");
}
