//! Tabular data sets: a CSV's columns typed as numbers or categories, class labels that may
//! be names, and the schema that turns new rows into model inputs the same way at
//! prediction time. Raw features hold one value per column — the number, the category's
//! index, or NaN for a missing cell — so that cleaning (`clean`) can see the gaps; one-hot
//! encoding comes after cleaning.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rng::Rng;

use super::checksum::sha256_hex;
use super::csv::read_text;
use super::table::{is_missing, looks_like_header, quoted_list, ColumnRef, Quoted, RawTable};
use super::{stratified_indices, Dataset};

/// Stream label for the training rows' order.
const ROW_ORDER_STREAM: u64 = 0x6b69_6c6e_524f_5753; // "kilnROWS"

/// What a feature column holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ColumnKind {
    Numeric {},
    /// One-hot encoded over the categories seen in the training split (sorted); an unseen
    /// category encodes as all zeros, like Keras's `StringLookup` with no OOV slot.
    Categorical {
        categories: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureColumn {
    pub name: String,
    #[serde(flatten)]
    pub kind: ColumnKind,
}

/// How a CSV's columns become a model's inputs, saved with the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSchema {
    /// The feature columns, in input order.
    pub columns: Vec<FeatureColumn>,
    pub label: String,
    /// Class names by label index when the labels are names; None for integer labels.
    #[serde(default)]
    pub class_names: Option<Vec<String>>,
    /// Whether the training file had a header (prediction files are then matched by name).
    pub has_header: bool,
}

/// Which columns of a CSV to use, as the spec says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ColumnChoice {
    /// Default: the last column.
    pub label: Option<ColumnRef>,
    /// Default: every column but the label.
    pub features: Option<Vec<ColumnRef>>,
    /// Columns to one-hot encode even if their values are numbers (codes, say); columns with
    /// any non-numeric value are categorical anyway.
    pub categorical: Vec<ColumnRef>,
    /// None = detect.
    pub header: Option<bool>,
}

/// A tabular data set split into train and test, raw (NaN for missing cells).
#[derive(Debug, Clone, PartialEq)]
pub struct TableSplits {
    pub train: Dataset,
    pub test: Dataset,
    pub schema: TableSchema,
    /// Hex SHA-256 of the training file's text, followed by the test file's when given.
    pub sha256: String,
    /// Where the first missing cell of the training split is, e.g. `line 7, column "age"`.
    pub first_missing: Option<String>,
}

/// Column positions and types resolved against a file.
struct Layout {
    label: usize,
    features: Vec<usize>,
    categorical: Vec<bool>,
}

impl Layout {
    fn resolve(table: &RawTable, choice: &ColumnChoice, path: &Path) -> Result<Layout> {
        let label = match &choice.label {
            Some(c) => table.position(c, path, "label")?,
            None => table.width() - 1,
        };
        let features = match &choice.features {
            Some(list) => list
                .iter()
                .map(|c| table.position(c, path, "feature"))
                .collect::<Result<Vec<_>>>()?,
            None => (0..table.width()).filter(|&c| c != label).collect(),
        };
        if let Some(&c) = features.iter().find(|&&c| c == label) {
            return Err(Error::data(
                path,
                format!("column {:?} is both the label and a feature", table.names[c]),
            ));
        }
        if features.is_empty() {
            return Err(Error::data(path, "has no feature columns besides the label"));
        }
        let forced = choice
            .categorical
            .iter()
            .map(|c| table.position(c, path, "categorical"))
            .collect::<Result<Vec<_>>>()?;
        let categorical = features
            .iter()
            .map(|&c| Ok(forced.contains(&c) || is_text_column(table, c, path)?))
            .collect::<Result<_>>()?;
        Ok(Layout {
            label,
            features,
            categorical,
        })
    }
}

/// Whether a column holds text (a category) rather than numbers. A column mixing both is
/// most likely a number column with a typo, so it is an error naming the first odd cell,
/// unless the spec lists it as categorical.
fn is_text_column(table: &RawTable, c: usize, path: &Path) -> Result<bool> {
    let values = table.rows.iter().filter(|(_, r)| !is_missing(&r[c]));
    let (mut numbers, mut first_text) = (0usize, None);
    for (line, r) in values {
        match r[c].parse::<f64>() {
            Ok(_) => numbers += 1,
            Err(_) => first_text = first_text.or(Some((line, &r[c]))),
        }
    }
    match first_text {
        Some((line, text)) if numbers > 0 => Err(Error::data(
            path,
            format!(
                "line {line}, column {}: {} is not a number, yet {numbers} other cells of the column are; fix the cell, or list the column in categorical_columns",
                Quoted(&table.names[c]),
                Quoted(text)
            ),
        )),
        found => Ok(found.is_some()),
    }
}

/// Reads a tabular data set: `train_path`, and `test_path` or a stratified split of
/// `test_fraction` from `seed`. Categories and their order come from the training split.
pub fn load_table(
    train_path: &Path,
    test_path: Option<&Path>,
    choice: &ColumnChoice,
    test_fraction: f32,
    seed: u64,
) -> Result<TableSplits> {
    let mut text = read_text(train_path)?;
    let table = RawTable::parse(&text, train_path, choice.header)?;
    let layout = Layout::resolve(&table, choice, train_path)?;
    let test_table = match test_path {
        Some(p) => {
            let test_text = read_text(p)?;
            let test = read_matching(&test_text, p, &table, choice.header)?;
            text.push_str(&test_text); // the lineage's hash covers both files
            Some(test)
        }
        None => None,
    };
    let label_cells = |t: &RawTable, path: &Path| -> Result<Vec<(usize, String)>> {
        t.rows
            .iter()
            .map(|(line, r)| match is_missing(&r[layout.label]) {
                true => Err(Error::data(
                    path,
                    format!(
                        "line {line}: the label column {} is empty",
                        Quoted(&table.names[layout.label])
                    ),
                )),
                false => Ok((*line, r[layout.label].clone())),
            })
            .collect()
    };
    let mut all_labels = label_cells(&table, train_path)?;
    let train_rows = all_labels.len();
    if let (Some(t), Some(p)) = (&test_table, test_path) {
        all_labels.extend(label_cells(t, p)?);
    }
    let (labels, class_names) = encode_labels(&all_labels, train_path)?;
    let (mut train_idx, test_idx): (Vec<usize>, Vec<usize>) = match &test_table {
        Some(_) => (
            (0..train_rows).collect(),
            (train_rows..all_labels.len()).collect(),
        ),
        None => stratified_indices(&labels, test_fraction, seed),
    };
    // Files are often sorted by class; the validation split is the training part's tail
    // (Keras), so the training rows go in a seeded shuffled order, not the file's.
    Rng::derive(seed, ROW_ORDER_STREAM).shuffle(&mut train_idx);
    let row = |i: usize| match (&test_table, i >= train_rows) {
        (Some(t), true) => &t.rows[i - train_rows],
        _ => &table.rows[i],
    };
    let columns: Vec<FeatureColumn> = layout
        .features
        .iter()
        .zip(&layout.categorical)
        .map(|(&c, &is_categorical)| FeatureColumn {
            name: table.names[c].clone(),
            kind: match is_categorical {
                false => ColumnKind::Numeric {},
                true => ColumnKind::Categorical {
                    categories: train_idx
                        .iter()
                        .map(|&i| &row(i).1[c])
                        .filter(|v| !is_missing(v))
                        .cloned()
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect(),
                },
            },
        })
        .collect();
    let schema = TableSchema {
        columns,
        label: table.names[layout.label].clone(),
        class_names,
        has_header: table.has_header,
    };
    let path_of = |i: usize| match (test_path, i >= train_rows) {
        (Some(p), true) => p,
        _ => train_path,
    };
    let gather = |indices: &[usize]| -> Result<Dataset> {
        let mut features = Vec::with_capacity(indices.len() * layout.features.len());
        for &i in indices {
            let (line, cells) = row(i);
            let picked: Vec<&str> = layout.features.iter().map(|&c| cells[c].as_str()).collect();
            schema.encode_row(&picked, &mut features, path_of(i), *line)?;
        }
        Dataset::new(
            features,
            vec![layout.features.len()],
            indices.iter().map(|&i| labels[i]).collect(),
        )
    };
    let train = gather(&train_idx)?;
    let test = gather(&test_idx)?;
    let mut in_file_order = train_idx.clone();
    in_file_order.sort_unstable();
    let first_missing = in_file_order.iter().find_map(|&i| {
        let (line, cells) = row(i);
        layout
            .features
            .iter()
            .find(|&&c| is_missing(&cells[c]))
            .map(|&c| {
                format!(
                    "{} line {line}, column {}",
                    path_of(i).display(),
                    Quoted(&table.names[c])
                )
            })
    });
    Ok(TableSplits {
        train,
        test,
        schema,
        sha256: sha256_hex(text.as_bytes()),
        first_missing,
    })
}

/// A test file, checked to have the training file's columns (by name when both have a
/// header, by count otherwise).
fn read_matching(text: &str, path: &Path, train: &RawTable, header: Option<bool>) -> Result<RawTable> {
    let test = RawTable::parse(text, path, header)?;
    if test.width() != train.width() {
        return Err(Error::data(
            path,
            format!(
                "has {} columns, the training file has {}",
                test.width(),
                train.width()
            ),
        ));
    }
    if test.has_header && train.has_header && test.names != train.names {
        return Err(Error::data(
            path,
            format!(
                "has columns {}, the training file has {}",
                quoted_list(&test.names),
                quoted_list(&train.names)
            ),
        ));
    }
    Ok(test)
}

/// Label indices and class names: integer labels stay as they are (no names); any other
/// label makes every label a name, indexed in sorted order.
fn encode_labels(cells: &[(usize, String)], path: &Path) -> Result<(Vec<u32>, Option<Vec<String>>)> {
    let as_integer = |c: &str| match c.parse::<f64>() {
        Ok(v) if v >= 0.0 && v.fract() == 0.0 && v <= u32::MAX as f64 => Some(v as u32),
        _ => None,
    };
    if let Some(labels) = cells
        .iter()
        .map(|(_, c)| as_integer(c))
        .collect::<Option<Vec<u32>>>()
    {
        return Ok((labels, None));
    }
    let names: Vec<String> = cells
        .iter()
        .map(|(_, c)| c.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if names.len() < 2 {
        return Err(Error::data(
            path,
            format!(
                "the label column has a single class {}: nothing to classify",
                Quoted(&names[0])
            ),
        ));
    }
    let labels = cells
        .iter()
        .map(|(_, c)| names.binary_search(c).expect("every label is among the names") as u32)
        .collect();
    Ok((labels, Some(names)))
}

impl TableSchema {
    /// Values per sample after one-hot encoding: what the model's input holds.
    pub fn encoded_width(&self) -> usize {
        self.columns
            .iter()
            .map(|c| match &c.kind {
                ColumnKind::Numeric {} => 1,
                ColumnKind::Categorical { categories } => categories.len(),
            })
            .sum()
    }

    /// Whether any column is one-hot encoded.
    pub fn has_categories(&self) -> bool {
        self.columns
            .iter()
            .any(|c| matches!(c.kind, ColumnKind::Categorical { .. }))
    }

    /// Whether column `i` is categorical.
    pub fn is_categorical(&self, i: usize) -> bool {
        matches!(self.columns[i].kind, ColumnKind::Categorical { .. })
    }

    /// Appends one row's raw features: numbers, category indices (the category count for
    /// one never seen in training), NaN for a missing cell.
    fn encode_row(&self, cells: &[&str], out: &mut Vec<f32>, path: &Path, line: usize) -> Result<()> {
        for (cell, column) in cells.iter().zip(&self.columns) {
            if is_missing(cell) {
                out.push(f32::NAN);
                continue;
            }
            out.push(match &column.kind {
                ColumnKind::Numeric {} => match cell.parse::<f32>() {
                    Ok(v) if v.is_finite() => v,
                    _ => {
                        return Err(Error::data(
                            path,
                            format!(
                                "line {line}, column {}: {} is not a finite number (the column is numeric)",
                                Quoted(&column.name),
                                Quoted(cell)
                            ),
                        ))
                    }
                },
                ColumnKind::Categorical { categories } => categories
                    .binary_search_by(|c| c.as_str().cmp(cell))
                    .unwrap_or(categories.len())
                    as f32,
            });
        }
        Ok(())
    }

    /// Raw features (one value per column, no missing values left) → model inputs, with
    /// each categorical column one-hot encoded in place.
    pub fn one_hot(&self, raw: &Dataset) -> Result<Dataset> {
        if !self.has_categories() {
            return Ok(raw.clone());
        }
        let width = self.encoded_width();
        let mut features = Vec::with_capacity(raw.len() * width);
        for i in 0..raw.len() {
            for (value, column) in raw.sample(i).iter().zip(&self.columns) {
                match &column.kind {
                    ColumnKind::Numeric {} => features.push(*value),
                    ColumnKind::Categorical { categories } => {
                        let at = features.len();
                        features.resize(at + categories.len(), 0.0);
                        if let Some(slot) = features[at..].get_mut(*value as usize) {
                            *slot = 1.0; // NaN as usize is 0, but cleaning has filled every gap
                        }
                    }
                }
            }
        }
        Dataset::new(features, vec![width], raw.labels.clone())
    }

    /// Narrows this schema to the categories `train`'s rows use, with `train` and `held_out`
    /// (raw rows of this schema) re-coded to it: a category only the held-out rows have
    /// becomes unseen, as it would be had the split been made before the categories were
    /// listed (cross-validation folds of one loaded data set).
    pub fn narrow_to(&mut self, train: &mut Dataset, held_out: &mut Dataset) {
        let width = self.columns.len();
        for (c, column) in self.columns.iter_mut().enumerate() {
            let ColumnKind::Categorical { categories } = &mut column.kind else {
                continue;
            };
            let mut used = vec![false; categories.len()];
            for row in train.features.chunks_exact(width) {
                if let Some(u) = used.get_mut(row[c] as usize).filter(|_| !row[c].is_nan()) {
                    *u = true;
                }
            }
            // Old index → new index; unused and unseen categories → the new count.
            let mut next = 0;
            let new_index: Vec<usize> = used
                .iter()
                .map(|&u| {
                    next += usize::from(u);
                    if u {
                        next - 1
                    } else {
                        usize::MAX
                    }
                })
                .collect();
            let kept = next;
            for data in [&mut *train, &mut *held_out] {
                for row in data.features.chunks_exact_mut(width) {
                    if !row[c].is_nan() {
                        let old = row[c] as usize;
                        let new = new_index.get(old).copied().unwrap_or(usize::MAX);
                        row[c] = if new == usize::MAX {
                            kept as f32
                        } else {
                            new as f32
                        };
                    }
                }
            }
            let old = std::mem::take(categories);
            *categories = old
                .into_iter()
                .zip(&used)
                .filter(|(_, &u)| u)
                .map(|(c, _)| c)
                .collect();
        }
    }

    /// Prediction rows from a CSV: with a header, feature columns are found by name (other
    /// columns, such as the label, are ignored); without one, the file holds exactly the
    /// feature columns in training order. Returns raw features and the row count.
    pub fn read_rows(&self, path: &Path) -> Result<(Vec<f32>, usize)> {
        // A header names every feature column; a single data row would look like one to
        // the generic rule, so the schema's names decide.
        let mut table = RawTable::read(path, Some(false))?;
        let first = &table.rows[0].1;
        // Without a header in training, the columns have no names to find.
        if self.has_header
            && (self.columns.iter().all(|c| first.contains(&c.name))
                || (table.rows.len() > 1 && looks_like_header(&table.rows)))
        {
            table.take_header(path)?;
        }
        let positions: Vec<usize> = if table.has_header {
            self.columns
                .iter()
                .map(|c| table.position(&ColumnRef::Name(c.name.clone()), path, "feature"))
                .collect::<Result<_>>()?
        } else if table.width() == self.columns.len() {
            (0..table.width()).collect()
        } else {
            return Err(Error::data(
                path,
                format!(
                    "rows have {} columns and no header, expected the model's {} feature columns {}",
                    table.width(),
                    self.columns.len(),
                    quoted_list(&self.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>())
                ),
            ));
        };
        let mut features = Vec::with_capacity(table.rows.len() * positions.len());
        for (line, cells) in &table.rows {
            let picked: Vec<&str> = positions.iter().map(|&c| cells[c].as_str()).collect();
            self.encode_row(&picked, &mut features, path, *line)?;
        }
        Ok((features, table.rows.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::test_support::TempDir;

    fn write(dir: &TempDir, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    const FRUIT: &str = "weight,colour,origin,kind\n\
        150,red,ES,apple\n120,green,,apple\n130,red,FR,apple\n\
        90,yellow,EC,banana\n,yellow,EC,banana\n95,green,CO,banana\n\
        300,green,ES,melon\n320,yellow,ES,melon\n";

    fn choice() -> ColumnChoice {
        ColumnChoice {
            label: Some(ColumnRef::Name("kind".into())),
            ..Default::default()
        }
    }

    #[test]
    fn types_columns_names_classes_and_marks_gaps() {
        let dir = TempDir::new("tabular");
        let path = write(&dir, "fruit.csv", FRUIT);
        let s = load_table(&path, None, &choice(), 0.0, 1).unwrap();
        let names: Vec<_> = s.schema.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["weight", "colour", "origin"]);
        assert_eq!(s.schema.columns[0].kind, ColumnKind::Numeric {});
        let colours = ColumnKind::Categorical {
            categories: vec!["green".into(), "red".into(), "yellow".into()],
        };
        assert_eq!(s.schema.columns[1].kind, colours);
        assert_eq!(
            s.schema.class_names.as_deref(),
            Some(&["apple".to_string(), "banana".into(), "melon".into()][..])
        );
        // Training rows come in a seeded shuffled order; sorted back, the classes as named.
        let mut labels = s.train.labels.clone();
        labels.sort_unstable();
        assert_eq!(labels, vec![0, 0, 0, 1, 1, 1, 2, 2]);
        // Origins sorted: CO EC ES FR. The 120 g apple has no origin; one banana no weight.
        let rows: Vec<&[f32]> = (0..s.train.len()).map(|i| s.train.sample(i)).collect();
        assert!(rows.contains(&&[150.0, 1.0, 2.0][..]));
        assert!(rows.iter().any(|r| r[0] == 120.0 && r[2].is_nan()));
        assert_eq!(rows.iter().filter(|r| r[0].is_nan()).count(), 1);
        assert_eq!(
            s.first_missing.as_deref(),
            Some(&*format!("{} line 3, column \"origin\"", path.display()))
        );
        assert_eq!(s.schema.encoded_width(), 1 + 3 + 4);
    }

    #[test]
    fn one_hot_encodes_categories_and_zeroes_unseen_ones() {
        let dir = TempDir::new("tabular-onehot");
        let path = write(&dir, "fruit.csv", FRUIT);
        let s = load_table(&path, None, &choice(), 0.0, 1).unwrap();
        let raw = Dataset::new(vec![150.0, 1.0, 2.0, 90.0, 2.0, 4.0], vec![3], vec![0, 1]).unwrap();
        let encoded = s.schema.one_hot(&raw).unwrap();
        assert_eq!(encoded.sample(0), &[150.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
        assert_eq!(encoded.sample(1), &[90.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn categories_come_from_the_training_split_only() {
        let dir = TempDir::new("tabular-split");
        let rows: String = (0..20).map(|i| format!("{i},c{i},{}\n", i % 2)).collect();
        let path = write(&dir, "t.csv", &format!("x,code,y\n{rows}"));
        let s = load_table(&path, None, &ColumnChoice::default(), 0.25, 3).unwrap();
        let ColumnKind::Categorical { categories } = &s.schema.columns[1].kind else {
            panic!("code is categorical")
        };
        // 2.5 of each class's 10 rows rounds to 3 held out.
        assert_eq!((s.train.len(), s.test.len(), categories.len()), (14, 6, 14));
        // Every test code is unseen: its index is the category count.
        assert!((0..6).all(|i| s.test.sample(i)[1] == 14.0));
        assert_eq!(s.schema.class_names, None);
    }

    #[test]
    fn narrowing_makes_categories_only_held_out_rows_use_unseen() {
        let dir = TempDir::new("tabular-narrow");
        let path = write(&dir, "fruit.csv", FRUIT);
        let mut s = load_table(&path, None, &choice(), 0.0, 1).unwrap().schema;
        // colour: green 0, red 1, yellow 2. Training uses red and yellow; held out, green.
        let mut train = Dataset::new(vec![1.0, 1.0, 0.0, 2.0, 2.0, f32::NAN], vec![3], vec![0, 1]).unwrap();
        let mut held_out = Dataset::new(vec![5.0, 0.0, 1.0], vec![3], vec![0]).unwrap();
        s.narrow_to(&mut train, &mut held_out);
        let ColumnKind::Categorical { categories } = &s.columns[1].kind else {
            panic!()
        };
        assert_eq!(categories, &["red", "yellow"]);
        assert_eq!(&train.features[..3], &[1.0, 0.0, 0.0]);
        assert_eq!(train.features[4], 1.0);
        assert_eq!(
            held_out.features[1], 2.0,
            "green is now unseen (the category count)"
        );
        // Origins: training uses only CO, so EC becomes unseen too; a gap stays a gap.
        assert_eq!(held_out.features[2], 1.0);
        assert!(train.features[5].is_nan());
        assert_eq!(s.encoded_width(), 1 + 2 + 1);
    }

    #[test]
    fn prediction_rows_are_matched_by_name_or_position() {
        let dir = TempDir::new("tabular-predict");
        let path = write(&dir, "fruit.csv", FRUIT);
        let s = load_table(&path, None, &choice(), 0.0, 1).unwrap();
        let named = write(&dir, "named.csv", "kind,origin,weight,colour\n?,FR,140,red\n");
        assert_eq!(s.schema.read_rows(&named).unwrap(), (vec![140.0, 1.0, 3.0], 1));
        let bare = write(&dir, "bare.csv", "140,red,FR\n");
        assert_eq!(s.schema.read_rows(&bare).unwrap(), (vec![140.0, 1.0, 3.0], 1));
        let missing = write(&dir, "missing.csv", "weight,origin\n1,ES\n");
        let e = s.schema.read_rows(&missing).unwrap_err().to_string();
        assert!(e.contains("feature column \"colour\" does not exist"), "{e}");
        let wrong = write(&dir, "wrong.csv", "weight,colour,origin\nheavy,red,ES\n");
        let e = s.schema.read_rows(&wrong).unwrap_err().to_string();
        assert!(
            e.ends_with(
                "line 2, column \"weight\": \"heavy\" is not a finite number (the column is numeric)"
            ),
            "{e}"
        );
    }

    #[test]
    fn bad_columns_and_labels_are_errors() {
        let dir = TempDir::new("tabular-bad");
        let path = write(&dir, "fruit.csv", FRUIT);
        let with = |c: ColumnChoice| load_table(&path, None, &c, 0.2, 1).unwrap_err().to_string();
        let e = with(ColumnChoice {
            label: Some(ColumnRef::Name("species".into())),
            ..Default::default()
        });
        assert!(e.contains("label column \"species\" does not exist: its columns are \"weight\", \"colour\", \"origin\", \"kind\""), "{e}");
        let e = with(ColumnChoice {
            features: Some(vec![ColumnRef::Name("kind".into())]),
            ..choice()
        });
        assert!(e.contains("\"kind\" is both the label and a feature"), "{e}");
        let mixed = write(&dir, "mixed.csv", "a,b,y\n1,2,x\n3,4y,z\n");
        let e = load_table(&mixed, None, &ColumnChoice::default(), 0.0, 1)
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("line 3, column \"b\": \"4y\" is not a number, yet 1 other cells of the column are; fix the cell, or list the column in categorical_columns"), "{e}");
        let forced = ColumnChoice {
            categorical: vec![ColumnRef::Name("b".into())],
            ..Default::default()
        };
        assert!(load_table(&mixed, None, &forced, 0.0, 1).is_ok());
        let gap = write(&dir, "gap.csv", "a,y\n1,x\n2,\n");
        let e = load_table(&gap, None, &ColumnChoice::default(), 0.0, 1)
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("line 3: the label column \"y\" is empty"), "{e}");
    }
}
