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

    /// An integer from `min` to `max` (`resize_h`: 1 to 16384).
    pub fn usize_in(
        &self,
        key: &str,
        min: usize,
        max: usize,
    ) -> Result<Option<usize>, ConfigError> {
        match self.usize(key)? {
            Some(v) if !(min..=max).contains(&v) => Err(self.error(
                key,
                self.raw(key).unwrap_or_default(),
                format!("an integer from {min} to {max}"),
            )),
            v => Ok(v),
        }
    }

    /// One of a few words (`color = "rgb"`, `precision = "fp16"`), in any ASCII case as
    /// TorchPipe's own `color` was; `None` when absent. `expected` is the error's last part.
    pub fn one_of<T: Copy>(
        &self,
        key: &str,
        options: &[(&str, T)],
        expected: impl Into<String>,
    ) -> Result<Option<T>, ConfigError> {
        let Some(text) = self.raw(key) else {
            return Ok(None);
        };
        options
            .iter()
            .find(|(word, _)| word.eq_ignore_ascii_case(text.trim()))
            .map(|&(_, value)| Some(value))
            .ok_or_else(|| self.error(key, text, expected))
    }

    /// `true` or `false` (a TOML boolean arrives as that text).
    pub fn bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        self.one_of(
            key,
            &[("true", true), ("false", false)],
            "`true` or `false`",
        )
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        Ok(self.bool(key)?.unwrap_or(default))
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
        match number_list(text) {
            Some(v) if v.len() == n => Ok(Some(v)),
            _ => Err(self.error(key, text, format!("{n} numbers separated by commas"))),
        }
    }

    /// Numbers separated by commas, as many as written (`mean`, whose count the model
    /// decides after loading: the caller checks it then).
    pub fn numbers(&self, key: &str) -> Result<Option<Vec<f32>>, ConfigError> {
        let Some(text) = self.raw(key) else {
            return Ok(None);
        };
        number_list(text)
            .map(Some)
            .ok_or_else(|| self.error(key, text, "numbers separated by commas"))
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

/// Finite numbers separated by commas, or `None` when any part is not one.
fn number_list(text: &str) -> Option<Vec<f32>> {
    text.split(',')
        .map(|v| v.trim().parse::<f32>().ok().filter(|f| f.is_finite()))
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Params {
        Params::from_pairs("n", pairs)
    }

    #[test]
    fn one_of_takes_any_case_and_names_the_choices_otherwise() {
        let words = [("rgb", true), ("bgr", false)];
        let at = |v: &str| p(&[("color", v)]).one_of("color", &words, "`rgb` or `bgr`");
        assert_eq!(at(" RGB ").unwrap(), Some(true));
        assert_eq!(at("bgr").unwrap(), Some(false));
        assert_eq!(p(&[]).one_of("color", &words, "x").unwrap(), None);
        assert_eq!(
            at("rbg").unwrap_err().to_string(),
            "<inline>: node [n], key `color` = \"rbg\": `rgb` or `bgr`"
        );
    }

    #[test]
    fn booleans_are_true_or_false() {
        let at = |v: &str| p(&[("b", v)]).bool_or("b", true);
        assert!(!at("false").unwrap());
        assert!(at("true").unwrap());
        assert!(p(&[]).bool_or("b", true).unwrap());
        assert_eq!(
            at("yes").unwrap_err().to_string(),
            "<inline>: node [n], key `b` = \"yes\": `true` or `false`"
        );
    }

    #[test]
    fn bounded_integers_and_number_lists() {
        let side = |v: &str| p(&[("h", v)]).usize_in("h", 1, 16384);
        assert_eq!(side("224").unwrap(), Some(224));
        assert_eq!(side("224.0").unwrap(), Some(224));
        assert!(side("0")
            .unwrap_err()
            .to_string()
            .ends_with("= \"0\": an integer from 1 to 16384"));
        assert!(side("x")
            .unwrap_err()
            .to_string()
            .ends_with("a non-negative integer"));
        let mean = p(&[("mean", "1, 2.5,3")]);
        assert_eq!(mean.numbers("mean").unwrap(), Some(vec![1.0, 2.5, 3.0]));
        assert!(p(&[("mean", "1,,3")])
            .numbers("mean")
            .unwrap_err()
            .to_string()
            .ends_with("numbers separated by commas"));
    }
}
