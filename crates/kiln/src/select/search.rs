//! Hyper-parameter search spaces: any spec setting, named by its path
//! (`"training.optimizer.learning_rate"`, `"model.layers[1].units"`), with a list of values
//! to try or a range to sample (uniform, log-uniform, integer). A trial is one value per
//! setting; applying it to a spec goes through the spec's own parser and checks, so a key
//! the spec does not have, or a value it cannot take, is an error naming the key.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::spec::Spec;

/// Stream label for sampling trials.
const SEARCH_STREAM: u64 = 0x6b69_6c6e_5345_4152; // "kilnSEAR"

/// The values one setting may take.
#[derive(Debug, Clone, PartialEq)]
pub enum Dimension {
    /// `key = [a, b, c]`: these values (any TOML value: numbers, strings, tables).
    Choice(Vec<Value>),
    /// `key = { uniform = [low, high] }`
    Uniform(f64, f64),
    /// `key = { log_uniform = [low, high] }`: uniform in log space (learning rates).
    LogUniform(f64, f64),
    /// `key = { int_uniform = [low, high] }`: an integer in [low, high].
    IntUniform(i64, i64),
}

/// How trials are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Every combination of the listed values (a seeded subset when capped).
    Grid,
    /// Each setting drawn independently.
    Random,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SearchSpace {
    /// (key as written, its path, its values), sorted by key.
    pub dimensions: Vec<(String, Vec<Segment>, Dimension)>,
    pub source: PathBuf,
}

/// One step of a key's path: a field name or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Field(String),
    Index(usize),
}

/// One value per dimension, in the space's order.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    pub values: Vec<Value>,
}

impl SearchSpace {
    /// Reads a search space file (TOML, one quoted key per setting).
    pub fn from_file(path: &Path) -> Result<SearchSpace> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        SearchSpace::parse(&text, path)
    }

    /// Parses TOML text; `path` names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<SearchSpace> {
        let fail = |message: String| Error::data(path, message);
        let table: toml::Table =
            toml::from_str(text).map_err(|e| fail(format!("is not valid TOML: {}", e.message())))?;
        if table.is_empty() {
            return Err(fail("names no settings to search; write e.g. \"training.optimizer.learning_rate\" = [0.001, 0.01]".into()));
        }
        let dimensions = table
            .iter()
            .map(|(key, value)| {
                let at = |m: String| fail(format!("key `{key}`: {m}"));
                Ok((
                    key.clone(),
                    parse_path(key).map_err(at)?,
                    parse_dimension(value).map_err(at)?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(SearchSpace {
            dimensions,
            source: path.to_path_buf(),
        })
    }

    /// Checks every key against `spec`: each must name a setting the spec has (or may
    /// have) and accept the key's first value.
    pub fn check_against(&self, spec: &Spec) -> Result<()> {
        for (i, (key, _, dimension)) in self.dimensions.iter().enumerate() {
            let mut values: Vec<Value> = self.current_values(spec);
            values[i] = first_value(dimension);
            self.apply(spec, &Trial { values }).map_err(|e| {
                Error::data(
                    &self.source,
                    format!("key `{key}`: {}", strip_source(&e.to_string(), &self.source)),
                )
            })?;
        }
        Ok(())
    }

    /// The spec's own value at each key (null where it has none): the baseline trial.
    pub fn current_values(&self, spec: &Spec) -> Vec<Value> {
        let mut root = serde_json::to_value(spec).expect("a spec serializes");
        crate::spec::tidy_json(&mut root);
        self.dimensions
            .iter()
            .map(|(_, path, _)| lookup(&root, path).cloned().unwrap_or(Value::Null))
            .collect()
    }

    /// `spec` with the trial's values set; a null value leaves the setting as it is.
    pub fn apply(&self, spec: &Spec, trial: &Trial) -> Result<Spec> {
        let mut root = serde_json::to_value(spec).expect("a spec serializes");
        for ((key, path, _), value) in self.dimensions.iter().zip(&trial.values) {
            if !value.is_null() {
                set(&mut root, path, value.clone())
                    .map_err(|m| Error::data(&self.source, format!("key `{key}`: {m}")))?;
            }
        }
        let changed = spec.same_kind_from(root, &self.source)?;
        changed.check(&self.source)?;
        Ok(changed)
    }

    /// The trials to run: the whole grid (or `cap` of its points, drawn by the seed), or
    /// `cap` random draws.
    pub fn trials(&self, strategy: Strategy, cap: Option<usize>, seed: u64) -> Result<Vec<Trial>> {
        let mut rng = Rng::derive(seed, SEARCH_STREAM);
        match strategy {
            Strategy::Random => {
                let count = cap.unwrap_or(10);
                Ok((0..count)
                    .map(|_| Trial {
                        values: self
                            .dimensions
                            .iter()
                            .map(|(_, _, d)| draw(d, &mut rng))
                            .collect(),
                    })
                    .collect())
            }
            Strategy::Grid => {
                let lists = self
                    .dimensions
                    .iter()
                    .map(|(key, _, d)| match d {
                        Dimension::Choice(values) => Ok(values.clone()),
                        _ => Err(Error::data(
                            &self.source,
                            format!("key `{key}`: grid search needs a list of values, not a range; use random search or list the values"),
                        )),
                    })
                    .collect::<Result<Vec<_>>>()?;
                let mut grid = cartesian(&lists);
                if let Some(cap) = cap.filter(|&c| c < grid.len()) {
                    rng.shuffle(&mut grid);
                    grid.truncate(cap);
                }
                Ok(grid.into_iter().map(|values| Trial { values }).collect())
            }
        }
    }

    /// Number of grid points (None when a dimension is a range).
    pub fn grid_size(&self) -> Option<usize> {
        self.dimensions
            .iter()
            .map(|(_, _, d)| match d {
                Dimension::Choice(v) => Some(v.len()),
                _ => None,
            })
            .product()
    }
}

/// `a.b[2].c` or `a.b.2.c` → [a, b, 2, c].
fn parse_path(key: &str) -> std::result::Result<Vec<Segment>, String> {
    let mut path = Vec::new();
    for part in key.split('.') {
        let (name, indices) = match part.find('[') {
            Some(at) => (&part[..at], &part[at..]),
            None => (part, ""),
        };
        match name.parse::<usize>() {
            Ok(i) => path.push(Segment::Index(i)),
            Err(_) if !name.is_empty() => path.push(Segment::Field(name.to_string())),
            Err(_) if indices.is_empty() => {
                return Err("has an empty part; write e.g. model.layers[0].units".into())
            }
            Err(_) => {}
        }
        for index in indices.split_terminator(']') {
            let digits = index.strip_prefix('[').ok_or("has a malformed [index]")?;
            path.push(Segment::Index(
                digits
                    .parse()
                    .map_err(|_| format!("[{digits}] is not a list index"))?,
            ));
        }
    }
    Ok(path)
}

fn parse_dimension(value: &toml::Value) -> std::result::Result<Dimension, String> {
    let json = |v: &toml::Value| serde_json::to_value(v).expect("TOML values convert to JSON");
    match value {
        toml::Value::Array(values) if values.is_empty() => Err("an empty list of values".into()),
        toml::Value::Array(values) => Ok(Dimension::Choice(values.iter().map(json).collect())),
        toml::Value::Table(t) if t.len() == 1 => {
            let (kind, bounds) = t.iter().next().expect("one entry");
            let pair = match bounds.as_array().map(Vec::as_slice) {
                Some([lo, hi]) => (number(lo)?, number(hi)?),
                _ => return Err(format!("{kind} takes [low, high]")),
            };
            if pair.0.is_nan() || pair.1.is_nan() || pair.0 > pair.1 {
                return Err(format!("{kind} = [{}, {}]: low is above high", pair.0, pair.1));
            }
            match kind.as_str() {
                "uniform" => Ok(Dimension::Uniform(pair.0, pair.1)),
                "log_uniform" if pair.0 > 0.0 => Ok(Dimension::LogUniform(pair.0, pair.1)),
                "log_uniform" => Err("log_uniform needs a positive low bound".into()),
                "int_uniform" if pair.0.fract() == 0.0 && pair.1.fract() == 0.0 => {
                    Ok(Dimension::IntUniform(pair.0 as i64, pair.1 as i64))
                }
                "int_uniform" => Err("int_uniform takes integer bounds".into()),
                other => Err(format!(
                    "unknown range `{other}`; expected uniform, log_uniform or int_uniform"
                )),
            }
        }
        _ => Err(
            "expected a list of values, or one of { uniform | log_uniform | int_uniform = [low, high] }"
                .into(),
        ),
    }
}

fn number(v: &toml::Value) -> std::result::Result<f64, String> {
    v.as_float()
        .or_else(|| v.as_integer().map(|i| i as f64))
        .ok_or_else(|| format!("{v} is not a number"))
}

fn first_value(d: &Dimension) -> Value {
    match d {
        Dimension::Choice(v) => v[0].clone(),
        Dimension::Uniform(lo, _) | Dimension::LogUniform(lo, _) => Value::from(*lo),
        Dimension::IntUniform(lo, _) => Value::from(*lo),
    }
}

fn draw(d: &Dimension, rng: &mut Rng) -> Value {
    match d {
        Dimension::Choice(values) => values[rng.below(values.len())].clone(),
        // Rounded for readable tables, then kept inside the range rounding may leave.
        Dimension::Uniform(lo, hi) => Value::from(round3(lo + rng.next_f64() * (hi - lo)).clamp(*lo, *hi)),
        Dimension::LogUniform(lo, hi) => {
            Value::from(round3((lo.ln() + rng.next_f64() * (hi.ln() - lo.ln())).exp()).clamp(*lo, *hi))
        }
        Dimension::IntUniform(lo, hi) => Value::from(lo + rng.below((hi - lo + 1) as usize) as i64),
    }
}

/// Three significant digits: 0.003162 rather than 0.0031622776601683794, for readable tables.
fn round3(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let scale = 10f64.powi(2 - v.abs().log10().floor() as i32);
    (v * scale).round() / scale
}

fn cartesian(lists: &[Vec<Value>]) -> Vec<Vec<Value>> {
    lists.iter().fold(vec![Vec::new()], |acc, list| {
        acc.iter()
            .flat_map(|prefix| {
                list.iter().map(move |v| {
                    let mut next = prefix.clone();
                    next.push(v.clone());
                    next
                })
            })
            .collect()
    })
}

fn lookup<'a>(root: &'a Value, path: &[Segment]) -> Option<&'a Value> {
    path.iter().try_fold(root, |at, seg| match seg {
        Segment::Field(name) => at.get(name),
        Segment::Index(i) => at.get(i),
    })
}

/// Sets the value at `path`; every step but the last must exist (the last may be a setting
/// the spec left at its default, which the spec's parser then accepts or rejects).
fn set(root: &mut Value, path: &[Segment], value: Value) -> std::result::Result<(), String> {
    let (last, steps) = path.split_last().ok_or("is empty")?;
    let mut at = root;
    let mut walked = String::new();
    for seg in steps {
        at = match seg {
            Segment::Field(name) => {
                let here = describe(&walked);
                walked = join(&walked, name);
                at.get_mut(name)
                    .ok_or_else(|| format!("{here} has no `{name}`"))?
            }
            Segment::Index(i) => {
                let len = at.as_array().map_or(0, Vec::len);
                let here = describe(&walked);
                walked = format!("{walked}[{i}]");
                at.get_mut(i)
                    .ok_or_else(|| format!("{here} has {len} entries, no index {i}"))?
            }
        };
    }
    match (last, at) {
        (Segment::Field(name), Value::Object(map)) => {
            map.insert(name.clone(), value);
            Ok(())
        }
        (Segment::Index(i), Value::Array(list)) if *i < list.len() => {
            list[*i] = value;
            Ok(())
        }
        (Segment::Index(i), Value::Array(list)) => Err(format!(
            "{} has {} entries, no index {i}",
            describe(&walked),
            list.len()
        )),
        _ => Err(format!("{} is not a table or list", describe(&walked))),
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

fn describe(walked: &str) -> String {
    if walked.is_empty() {
        "the spec".into()
    } else {
        format!("`{walked}`")
    }
}

/// An error's text without its leading "SOURCE: ", to nest it under a key.
fn strip_source(text: &str, source: &Path) -> String {
    let prefix = format!("{}: ", source.display());
    text.strip_prefix(&prefix).unwrap_or(text).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::TrainSpec;

    const SPEC: &str = r#"
[data]
source = "digits"
[model]
layers = [
  { type = "dense", units = 32, activation = "relu" },
  { type = "dropout", rate = 0.2 },
  { type = "dense", units = 10, activation = "softmax" },
]
[training]
optimizer = { type = "adam", learning_rate = 0.001 }
loss = "sparse_categorical_crossentropy"
epochs = 3
validation_split = 0.2
"#;

    fn spec() -> Spec {
        Spec::Sequential(TrainSpec::parse(SPEC, Path::new("s.toml")).unwrap())
    }

    fn space(text: &str) -> Result<SearchSpace> {
        SearchSpace::parse(text, Path::new("space.toml"))
    }

    #[test]
    fn applies_values_at_paths_with_dots_or_brackets() {
        let s = space(
            r#"
"training.optimizer.learning_rate" = [0.01]
"model.layers[0].units" = [64]
"model.layers.1.rate" = [0.5]
"training.batch_size" = [16]
"#,
        )
        .unwrap();
        s.check_against(&spec()).unwrap();
        let trial = &s.trials(Strategy::Grid, None, 0).unwrap()[0];
        let changed = s.apply(&spec(), trial).unwrap();
        let Spec::Sequential(c) = &changed else {
            panic!("the same kind of spec")
        };
        assert_eq!(c.training.batch_size, 16);
        let json = serde_json::to_value(&changed).unwrap();
        assert_eq!(json["model"]["layers"][0]["units"], 64);
        assert_eq!(json["model"]["layers"][1]["rate"], 0.5);
        assert_eq!(c.training.optimizer.learning_rate(), 0.01);
        let baseline = s.current_values(&spec());
        assert_eq!(baseline[1], Value::from(32));
        assert_eq!(s.apply(&spec(), &Trial { values: baseline }).unwrap(), spec());
    }

    #[test]
    fn keys_the_spec_does_not_have_are_errors_naming_them() {
        let err = |text: &str| {
            space(text)
                .and_then(|s| s.check_against(&spec()))
                .unwrap_err()
                .to_string()
        };
        let e = err(r#""training.optimizer.learning_rte" = [0.01]"#);
        assert!(
            e.starts_with("space.toml: key `training.optimizer.learning_rte`:"),
            "{e}"
        );
        assert!(e.contains("unknown field `learning_rte`"), "{e}");
        let e = err(r#""model.layers[5].units" = [8]"#);
        assert!(
            e.contains("key `model.layers[5].units`: `model.layers` has 3 entries, no index 5"),
            "{e}"
        );
        let e = err(r#""trainig.epochs" = [2]"#);
        assert!(
            e.contains("key `trainig.epochs`: the spec has no `trainig`"),
            "{e}"
        );
        let e = err(r#""training.epochs" = [0]"#);
        assert!(e.contains("epochs must be at least 1"), "{e}");
        let e = err(r#""training.optimizer.learning_rate" = { log_uniform = [0, 1] }"#);
        assert!(e.contains("positive low bound"), "{e}");
        assert!(err("").contains("names no settings"));
        assert!(err(r#""training.epochs" = 3"#).contains("expected a list of values"));
    }

    #[test]
    fn grids_cover_every_combination_and_random_draws_stay_in_range() {
        let s = space(
            r#"
"model.layers[0].units" = [16, 32, 64]
"model.layers[1].rate" = [0.0, 0.5]
"#,
        )
        .unwrap();
        assert_eq!(s.grid_size(), Some(6));
        let grid = s.trials(Strategy::Grid, None, 0).unwrap();
        assert_eq!(grid.len(), 6);
        assert_eq!(grid[1].values, vec![Value::from(16), Value::from(0.5)]);
        assert_eq!(s.trials(Strategy::Grid, Some(4), 1).unwrap().len(), 4);

        let r = space(
            r#"
"training.optimizer.learning_rate" = { log_uniform = [0.0001, 0.1] }
"training.batch_size" = { int_uniform = [8, 64] }
"#,
        )
        .unwrap();
        let trials = r.trials(Strategy::Random, Some(50), 3).unwrap();
        // Keys are sorted: batch_size, then learning_rate.
        for t in &trials {
            let lr = t.values[1].as_f64().unwrap();
            let batch = t.values[0].as_i64().unwrap();
            assert!((0.0001..=0.1).contains(&lr) && (8..=64).contains(&batch), "{t:?}");
        }
        let small = trials
            .iter()
            .filter(|t| t.values[1].as_f64().unwrap() < 0.00316)
            .count();
        assert!(
            (15..=35).contains(&small),
            "log-uniform puts half below the geometric mean: {small}"
        );
        assert_eq!(r.trials(Strategy::Random, Some(50), 3).unwrap(), trials);
        assert!(r.trials(Strategy::Grid, None, 0).is_err());
    }

    #[test]
    fn rounds_to_three_significant_digits() {
        assert_eq!(round3(0.0031622776), 0.00316);
        assert_eq!(round3(123.456), 123.0);
        assert_eq!(round3(0.0), 0.0);
    }
}
