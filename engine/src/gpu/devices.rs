//! Whether the GPUs a node names (`device_id`) exist: a pure check over the list the driver
//! reports, apart from CUDA so that its message is tested on machines without a GPU.

use crate::config::Params;
use crate::error::ConfigError;

/// A `device_id` naming a GPU this machine does not have.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("there is no GPU {missing}; {}", found_text(.found))]
pub struct MissingGpu {
    pub missing: usize,
    /// The name of each GPU the driver reports, by index.
    pub found: Vec<String>,
}

/// Every index in `ids` must be a GPU of `found` (the driver's GPUs, by index); the first that
/// is not is the error.
pub fn check(ids: &[usize], found: &[String]) -> Result<(), MissingGpu> {
    match ids.iter().find(|&&id| id >= found.len()) {
        Some(&missing) => Err(MissingGpu {
            missing,
            found: found.to_vec(),
        }),
        None => Ok(()),
    }
}

/// `found 1 GPU: 0 = NVIDIA H200`, `found 2 GPUs: 0 = …, 1 = …`, `found no GPU`.
fn found_text(found: &[String]) -> String {
    if found.is_empty() {
        return "found no GPU".into();
    }
    let list: Vec<String> = found
        .iter()
        .enumerate()
        .map(|(i, name)| format!("{i} = {name}"))
        .collect();
    let plural = if found.len() == 1 { "" } else { "s" };
    format!("found {} GPU{plural}: {}", found.len(), list.join(", "))
}

impl MissingGpu {
    /// The start-up error: the file, the node, key `device_id` with its value as written (none
    /// when the node relies on the default, GPU 0), and the GPUs found.
    pub fn config_error(&self, params: &Params) -> ConfigError {
        let written = params.raw("device_id");
        let default = if written.is_none() {
            " (`device_id` is 0 unless set)"
        } else {
            ""
        };
        ConfigError {
            file: params.file().to_path_buf(),
            node: Some(params.node().to_string()),
            key: Some("device_id".into()),
            value: written.map(String::from),
            expected: format!("GPU indices this machine has{default}: {self}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h200s(n: usize) -> Vec<String> {
        vec!["NVIDIA H200".to_string(); n]
    }

    #[test]
    fn gpus_that_exist_pass() {
        assert_eq!(check(&[0], &h200s(1)), Ok(()));
        assert_eq!(check(&[1, 0], &h200s(2)), Ok(()));
    }

    #[test]
    fn a_missing_gpu_names_the_value_and_the_gpus_found() {
        let p = Params::from_pairs("model", &[("device_id", "1")]);
        let e = check(&[1], &h200s(1)).unwrap_err();
        assert_eq!(e.missing, 1);
        assert_eq!(
            e.config_error(&p).to_string(),
            "<inline>: node [model], key `device_id` = \"1\": GPU indices this machine has: \
             there is no GPU 1; found 1 GPU: 0 = NVIDIA H200"
        );
    }

    #[test]
    fn a_list_fails_on_its_first_missing_gpu_and_lists_every_gpu() {
        let found = vec!["NVIDIA H200".to_string(), "NVIDIA L4".to_string()];
        let e = check(&[0, 3, 2], &found).unwrap_err();
        assert_eq!(
            e.to_string(),
            "there is no GPU 3; found 2 GPUs: 0 = NVIDIA H200, 1 = NVIDIA L4"
        );
    }

    #[test]
    fn the_default_gpu_on_a_machine_without_one_says_so() {
        let p = Params::from_pairs("model", &[]);
        let e = check(&[0], &[]).unwrap_err().config_error(&p);
        assert_eq!(e.value, None);
        assert_eq!(
            e.to_string(),
            "<inline>: node [model], key `device_id`: GPU indices this machine has \
             (`device_id` is 0 unless set): there is no GPU 0; found no GPU"
        );
    }
}
