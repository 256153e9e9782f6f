use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::ConfigError;

/// A node's merged settings as written, with typed getters whose errors locate the problem.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    file: PathBuf,
    node: String,
    values: BTreeMap<String, String>,
}

impl Params {
    pub fn new(file: &Path, node: &str, values: BTreeMap<String, String>) -> Self {
        Params {
            file: file.to_path_buf(),
            node: node.to_string(),
            values,
        }
    }

    /// Settings for a backend built outside a TOML (tests, the baseline).
    pub fn from_pairs(node: &str, pairs: &[(&str, &str)]) -> Self {
        let values = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Params::new(Path::new("<inline>"), node, values)
    }

    /// The same settings without `keys` (the baseline normalises outside the model).
    pub fn without(&self, keys: &[&str]) -> Params {
        let mut p = self.clone();
        p.values.retain(|k, _| !keys.contains(&k.as_str()));
        p
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    pub fn error(&self, key: &str, value: &str, expected: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            node: Some(self.node.clone()),
            key: Some(key.to_string()),
            value: Some(value.to_string()),
            expected: expected.into(),
        }
    }

    pub fn raw(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    pub fn str_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.raw(key).map(str::trim).unwrap_or(default)
    }

    /// A comma-separated list (`next = "a,b"`), empty items dropped.
    pub fn list(&self, key: &str) -> Vec<String> {
        self.raw(key)
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn usize(&self, key: &str) -> Result<Option<usize>, ConfigError> {
        self.raw(key)
            .map(|text| {
                let t = text.trim();
                // `4.0` from a TOML float is the same as 4.
                t.parse::<usize>()
                    .ok()
                    .or_else(|| {
                        t.parse::<f64>()
                            .ok()
                            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 1e15)
                            .map(|f| f as usize)
                    })
                    .ok_or_else(|| self.error(key, text, "a non-negative integer"))
            })
            .transpose()
    }

    pub fn usize_or(&self, key: &str, default: usize) -> Result<usize, ConfigError> {
        Ok(self.usize(key)?.unwrap_or(default))
    }

    pub fn f64(&self, key: &str) -> Result<Option<f64>, ConfigError> {
        self.raw(key)
            .map(|text| {
                text.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .ok_or_else(|| self.error(key, text, "a number"))
            })
            .transpose()
    }

    /// Milliseconds, fractional allowed, as TorchPipe's `batching_timeout`.
    pub fn millis(&self, key: &str) -> Result<Option<Duration>, ConfigError> {
        match self.f64(key)? {
            None => Ok(None),
            Some(ms) if (0.0..=86_400_000.0).contains(&ms) => {
                Ok(Some(Duration::from_secs_f64(ms / 1000.0)))
            }
            Some(_) => Err(self.error(
                key,
                self.raw(key).unwrap_or_default(),
                "milliseconds from 0 to 86400000",
            )),
        }
    }

    pub fn millis_or(&self, key: &str, default: Duration) -> Result<Duration, ConfigError> {
        Ok(self.millis(key)?.unwrap_or(default))
    }

    /// `n` numbers separated by commas (`mean = "123.675, 116.28, 103.53"`).
    pub fn floats(&self, key: &str, n: usize) -> Result<Option<Vec<f32>>, ConfigError> {
        let Some(text) = self.raw(key) else {
            return Ok(None);
        };
        let values: Option<Vec<f32>> = text
            .split(',')
            .map(|v| v.trim().parse::<f32>().ok().filter(|f| f.is_finite()))
            .collect();
        match values {
            Some(v) if v.len() == n => Ok(Some(v)),
            _ => Err(self.error(key, text, format!("{n} numbers separated by commas"))),
        }
    }

    /// A file path: relative paths resolve against the TOML's folder first, then the working
    /// directory. The file must exist.
    pub fn path(&self, key: &str) -> Result<PathBuf, ConfigError> {
        let text = self
            .raw(key)
            .ok_or_else(|| self.error(key, "", "a path to an existing file"))?;
        resolve_path(&self.file, text.trim()).ok_or_else(|| {
            self.error(
                key,
                text,
                "an existing file (relative paths are tried against the TOML's folder, then the working directory)",
            )
        })
    }
}

pub fn resolve_path(toml_file: &Path, text: &str) -> Option<PathBuf> {
    let p = Path::new(text);
    if p.is_absolute() {
        return p.is_file().then(|| p.to_path_buf());
    }
    let dir = toml_file.parent().unwrap_or(Path::new("."));
    [dir.join(p), p.to_path_buf()]
        .into_iter()
        .find(|c| c.is_file())
}
