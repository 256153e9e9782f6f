//! Whether the GPUs a node names (`device_id`) exist: a pure check over the list the driver
//! reports, apart from CUDA so that its message is tested on machines without a GPU.

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
    fn a_list_fails_on_its_first_missing_gpu_and_lists_every_gpu() {
        let found = vec!["NVIDIA H200".to_string(), "NVIDIA L4".to_string()];
        let e = check(&[0, 3, 2], &found).unwrap_err();
        assert_eq!(
            e.to_string(),
            "there is no GPU 3; found 2 GPUs: 0 = NVIDIA H200, 1 = NVIDIA L4"
        );
    }
}
