//! Every key of a TOML is read by someone: a misspelt key is a load error naming the file,
//! node, key and value, with a did-you-mean, not a setting silently ignored. And the backend
//! table of docs/config.md lists exactly the keys the backends declare.

mod common;

use std::path::Path;

use engine::backend::keys::SCHEDULING;
use engine::{Config, Pipeline, Registry};

fn check(toml: &str) -> Result<(), String> {
    let config = Config::parse(toml, Path::new("test.toml")).map_err(|e| e.to_string())?;
    Pipeline::check(&config, &Registry::with_defaults()).map_err(|e| e.to_string())
}

#[test]
fn a_misspelt_scheduling_key_is_refused_with_a_did_you_mean() {
    let e = check("[n]\nbackend = \"Identity\"\nbatching_timout = 5\n").unwrap_err();
    assert!(
        e.starts_with("test.toml: node [n], key `batching_timout` = \"5\": "),
        "{e}"
    );
    assert!(e.contains("did you mean `batching_timeout`?"), "{e}");
    assert!(e.contains("its backends' keys: none"), "{e}");
}

#[test]
fn a_misspelt_backend_key_is_refused_and_the_backends_keys_are_listed() {
    let e = check(
        "[pre]\nbackend = \"SyncTensor[Sequential[ResizeMat,cvtColorMat,Mat2Tensor]]\"\n\
         resize_h = 224\nresize_ww = 224\ncolor = \"rgb\"\n",
    )
    .unwrap_err();
    assert!(e.contains("node [pre], key `resize_ww` = \"224\""), "{e}");
    assert!(e.contains("did you mean `resize_w`?"), "{e}");
    assert!(
        e.contains("its backends' keys: color, resize_h, resize_w"),
        "{e}"
    );
}

#[test]
fn a_key_of_a_backend_the_node_does_not_run_is_refused() {
    let e = check("[n]\nbackend = \"DecodeMat\"\nresize_h = 224\n").unwrap_err();
    assert!(e.contains("key `resize_h`"), "{e}");
    assert!(e.contains("its backends' keys: max_pixels"), "{e}");
}

#[test]
fn global_keys_are_defaults_and_must_be_read_by_some_backend() {
    // A global default read by one node's backend and not another's is fine.
    check("resize_h = 2\nresize_w = 2\n[a]\nbackend = \"ResizeMat\"\nnext = \"b\"\n[b]\nbackend = \"Identity\"\n")
        .unwrap();
    let e = check("precison = \"fp16\"\n[n]\nbackend = \"Identity\"\n").unwrap_err();
    assert!(
        e.starts_with("test.toml: global section, key `precison`"),
        "{e}"
    );
    assert!(e.contains("did you mean `precision`?"), "{e}");
}

#[test]
fn every_shipped_config_passes() {
    for entry in std::fs::read_dir(common::repo_root().join("configs")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let config = common::load_repo_config(&name);
        Pipeline::check(&config, &Registry::with_defaults())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// The backticked words of a Markdown table cell.
fn ticked(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

#[test]
fn docs_config_md_lists_the_declared_keys() {
    let docs = std::fs::read_to_string(common::repo_root().join("docs/config.md")).unwrap();
    let registry = Registry::with_defaults();
    let section = |title: &str| -> Vec<Vec<String>> {
        let start = docs
            .find(title)
            .unwrap_or_else(|| panic!("no {title} in docs/config.md"));
        docs[start..]
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .skip(2)
            .map(|l| l.split('|').map(|c| c.trim().to_string()).collect())
            .collect()
    };
    // Scheduling keys: the table names exactly SCHEDULING.
    let mut documented: Vec<&str> = Vec::new();
    let rows = section("## Scheduling keys");
    for row in &rows {
        documented.extend(ticked(&row[1]));
    }
    let mut declared: Vec<&str> = SCHEDULING.iter().map(|k| k.name).collect();
    documented.sort_unstable();
    declared.sort_unstable();
    assert_eq!(documented, declared, "docs/config.md's scheduling keys");
    // Backends: every row's names are registered, and its keys column names exactly the keys
    // the backend declares (other backticked words must be values a declared key takes).
    let mut seen = Vec::new();
    for row in section("## Backends") {
        let (names, keys) = (&row[1], &row[2]);
        for name in ticked(names) {
            let name = name.split('[').next().unwrap_or(name);
            let declared = registry
                .keys(name)
                .unwrap_or_else(|| panic!("docs/config.md lists `{name}`, not registered"));
            let words = ticked(keys);
            for k in declared {
                assert!(
                    words.contains(&k.name),
                    "docs: `{name}` does not list `{}`",
                    k.name
                );
            }
            for w in words {
                assert!(
                    declared.iter().any(|k| k.name == w || k.takes.contains(w)),
                    "docs: `{name}` lists `{w}`, which it does not declare"
                );
            }
            seen.push(name.to_string());
        }
    }
    for name in registry.names() {
        assert!(
            seen.iter().any(|s| s == name),
            "docs/config.md lacks `{name}`"
        );
    }
}

#[test]
fn device_id_is_a_scheduling_key_and_its_misspellings_get_a_did_you_mean() {
    check("device_id = 0\n[n]\nbackend = \"Identity\"\ndevice_id = \"0,1\"\n").unwrap();
    let e = check("[n]\nbackend = \"Identity\"\ndevice_ids = 1\n").unwrap_err();
    assert!(
        e.starts_with("test.toml: node [n], key `device_ids` = \"1\": "),
        "{e}"
    );
    assert!(e.contains("did you mean `device_id`?"), "{e}");
    let e = check("[m]\nbackend = \"TensorrtTensor\"\nmodel = \"Cargo.toml\"\ndevice_di = 1\n")
        .unwrap_err();
    assert!(e.contains("did you mean `device_id`?"), "{e}");
    let e = check("devce_id = 1\n[n]\nbackend = \"Identity\"\n").unwrap_err();
    assert!(
        e.starts_with("test.toml: global section, key `devce_id`"),
        "{e}"
    );
    assert!(e.contains("did you mean `device_id`?"), "{e}");
}

#[test]
fn a_bad_value_fails_at_load_with_the_node_key_value_and_what_is_expected() {
    let e = check("[r]\nbackend = \"ResizeMat\"\nresize_h = 0\nresize_w = 2\n").unwrap_err();
    assert_eq!(
        e,
        "test.toml: node [r], key `resize_h` = \"0\": an integer from 1 to 16384"
    );
    let e = check("[c]\nbackend = \"Sequential[Identity,cvtColorMat]\"\n").unwrap_err();
    assert_eq!(
        e,
        "test.toml: node [c], key `color` = \"\": `rgb` or `bgr`, the channel order cvtColorMat \
         produces"
    );
    // A GPU backend's values are checked in every build, before it is refused for want of a
    // GPU.
    let e = check("[d]\nbackend = \"DecodeTensor\"\nnvjpeg_hardware = \"yes\"\n").unwrap_err();
    assert_eq!(
        e,
        "test.toml: node [d], key `nvjpeg_hardware` = \"yes\": `true` or `false`"
    );
    let model = "[m]\nbackend = \"TensorrtTensor\"\nmodel = \"Cargo.toml\"\n";
    let e = check(&format!("{model}precision = \"fp8\"\n")).unwrap_err();
    assert!(
        e.ends_with("key `precision` = \"fp8\": \"fp16\" or \"fp32\""),
        "{e}"
    );
    let e = check(&format!("{model}device = 1\n")).unwrap_err();
    assert!(e.contains("(which GPU is `device_id`)"), "{e}");
    let e = check(&format!("{model}std = \"1, 0, 1\"\n")).unwrap_err();
    assert!(e.ends_with("non-zero values (found 0)"), "{e}");
    // What only the machine decides (a GPU engine in this build) is left to start-up.
    check(&format!("{model}device = \"gpu\"\nprecision = \"FP32\"\n")).unwrap();
}
