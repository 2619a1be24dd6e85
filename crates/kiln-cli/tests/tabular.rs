//! Tabular data end to end through the `kiln` binary: a CSV with a header, a categorical
//! column, class names as labels, gaps, outliers and duplicates is cleaned (the report's
//! counts checked), trained on, evaluated and predicted from with names in and out; and
//! every malformed file or spec is a one-line error.

mod common;

use common::*;

/// Colour decides the class; x is noise. Row `i` of a deterministic sequence.
fn row(i: usize) -> (f32, &'static str, &'static str) {
    let colours = [("red", "alpha"), ("green", "beta"), ("blue", "gamma")];
    let (colour, class) = colours[(i * 7 + i / 3) % 3];
    ((i * 37 % 100) as f32 / 10.0, colour, class)
}

/// 90 clean rows with 3 gaps in x, 2 in colour, 2 outliers in x, then 2 exact duplicates.
fn dirty_train_csv() -> String {
    let mut lines = vec!["x,colour,kind".to_string()];
    for i in 0..90 {
        let (x, colour, class) = row(i);
        let x = match i {
            5 | 17 => "NA".to_string(),
            33 => String::new(),
            12 | 60 => "1000000".to_string(),
            _ => x.to_string(),
        };
        let colour = if i == 8 || i == 40 { "" } else { colour };
        lines.push(format!("{x},{colour},{class}"));
    }
    lines.push(lines[2].clone());
    lines.push(lines[3].clone());
    lines.join("\n") + "\n"
}

fn clean_csv(from: usize, rows: usize) -> String {
    let body: String = (from..from + rows)
        .map(|i| {
            let (x, colour, class) = row(i);
            format!("{x},{colour},{class}\n")
        })
        .collect();
    format!("x,colour,kind\n{body}")
}

fn spec(train: &str, preprocessing: &str) -> String {
    format!(
        r#"
[data]
source = "csv"
train = "{train}"
test = "test.csv"
label_column = "kind"

[preprocessing]
{preprocessing}

[model]
layers = [
  {{ type = "dense", units = 16, activation = "relu" }},
  {{ type = "dense", units = 3, activation = "softmax" }},
]

[training]
optimizer = {{ type = "adam", learning_rate = 0.05 }}
loss = "sparse_categorical_crossentropy"
epochs = 30
batch_size = 16
seed = 3
"#
    )
}

const CLEANING: &str = r#"missing = "mean"
outliers = { method = "iqr", action = "clip" }
drop_duplicates = true
normalization = { kind = "min_max" }"#;

#[test]
fn a_dirty_csv_with_class_names_trains_evaluates_and_predicts() {
    let s = Sandbox::new("tabular-e2e");
    s.write("train.csv", dirty_train_csv());
    s.write("test.csv", clean_csv(200, 30));
    let spec = s.write("spec.toml", spec("train.csv", CLEANING));
    let model = s.arg("m.safetensors");
    let out = s.kiln(&["train", &spec, "--out", &model]);
    assert_success(&out);
    let stdout = &out.1;
    assert!(
        stdout.contains("cleaning (train): 90 of 92 rows kept; 2 dropped duplicates\n"),
        "{stdout}"
    );
    assert!(stdout.contains("\n  x: 3 missing, 3 imputed with "), "{stdout}");
    assert!(stdout.contains(", 2 outliers, 2 clipped\n"), "{stdout}");
    // Colours sorted blue, green, red: the commonest fills the gaps, by its index.
    assert!(
        stdout.contains("\n  colour: 2 missing, 2 imputed with "),
        "{stdout}"
    );
    // The test file is clean, but some of its rows repeat training rows exactly: those go,
    // as dropping duplicates before splitting would have it.
    let train_rows: std::collections::HashSet<String> = dirty_train_csv().lines().map(String::from).collect();
    let repeats = clean_csv(200, 30)
        .lines()
        .skip(1)
        .filter(|l| train_rows.contains(*l))
        .count();
    assert!(repeats > 0, "the test data repeats some training rows");
    let expected = format!(
        "cleaning (test): {} of 30 rows kept; {repeats} dropped duplicates\n",
        30 - repeats
    );
    assert!(stdout.contains(&expected), "{expected}{stdout}");
    let accuracy: f32 = metric(stdout, "test_loss", "test_accuracy: ").parse().unwrap();
    assert!(accuracy >= 0.9, "test accuracy {accuracy}");

    let eval = s.kiln(&["eval", &model, "--report"]);
    assert_success(&eval);
    assert!(eval.1.contains("alpha") && eval.1.contains("gamma"), "{}", eval.1);

    let inspect = s.kiln(&["inspect", &model]);
    assert_success(&inspect);
    assert!(
        inspect.1.contains("categorical, one-hot over blue | green | red"),
        "{}",
        inspect.1
    );
    assert!(inspect.1.contains("classes: alpha, beta, gamma"), "{}", inspect.1);

    // Columns by name in any order, extra columns ignored, a gap imputed, an outlier clipped.
    let input = s.write("new.csv", "kind,colour,x\n?,red,NA\n?,blue,5e9\n?,green,2.5\n");
    let predict = s.kiln(&["predict", &model, "--input", &input]);
    assert_success(&predict);
    let classes: Vec<&str> = predict
        .1
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap())
        .collect();
    assert_eq!(classes, ["alpha", "gamma", "beta"], "{}", predict.1);
    assert!(
        predict.1.starts_with("row,class,p_alpha,p_beta,p_gamma\n"),
        "{}",
        predict.1
    );
}

#[test]
fn the_wine_example_cleans_and_classifies_its_cultivars() {
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/wine.toml");
    let s = Sandbox::new("tabular-wine");
    let model = s.arg("wine.safetensors");
    let out = s.kiln(&["train", spec, "--out", &model, "--quiet"]);
    assert_success(&out);
    let accuracy: f32 = metric(&out.1, "test_loss", "test_accuracy: ").parse().unwrap();
    assert!(accuracy >= 0.9, "wine test accuracy {accuracy}\n{}", out.1);
    let clean = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/data/wine.csv");
    let predict = s.kiln(&["predict", &model, "--input", clean]);
    assert_success(&predict);
    let right = predict
        .1
        .lines()
        .skip(1)
        .zip(std::fs::read_to_string(clean).unwrap().lines().skip(1))
        .filter(|(p, truth)| p.split(',').nth(1) == truth.rsplit(',').next())
        .count();
    assert!(right >= 160, "{right} of 178 clean wines right");
}

#[test]
fn malformed_tabular_files_and_specs_are_one_line_errors() {
    let s = Sandbox::new("tabular-bad");
    s.write("test.csv", clean_csv(200, 10));
    let train_with = |name: &str, csv: &str, preprocessing: &str| {
        let path = s.write(name, csv);
        let spec = s.write("spec.toml", spec(name, preprocessing));
        (s.kiln(&["train", &spec]), path)
    };
    let (out, path) = train_with("ragged.csv", "x,colour,kind\n1,red,alpha\n2,blue\n", "");
    assert_one_line_error(&out, &[&path, "line 3 has 2 columns, expected 3"]);
    let (out, path) = train_with("empty.csv", "", "");
    assert_one_line_error(&out, &[&path, "is empty: no rows"]);
    let (out, path) = train_with("nolabel.csv", "x,colour,species\n1,red,alpha\n2,blue,beta\n", "");
    assert_one_line_error(
        &out,
        &[
            &path,
            "label column \"kind\" does not exist: its columns are \"x\", \"colour\", \"species\"",
        ],
    );
    let (out, path) = train_with("gaps.csv", &dirty_train_csv(), "");
    assert_one_line_error(
        &out,
        &[&path, "line 7, column \"x\"", "set preprocessing.missing"],
    );
    let (out, _) = train_with(
        "t.csv",
        &clean_csv(0, 30),
        "outliers = { method = \"iqr\", threshold = -1 }",
    );
    assert_one_line_error(&out, &["preprocessing.outliers.threshold = -1"]);
    let (out, _) = train_with("t.csv", &clean_csv(0, 30), "missing = \"avg\"");
    assert_one_line_error(&out, &["line 9", "unknown variant `avg`", "most_frequent"]);

    let digits = s.write(
        "digits.toml",
        r#"
[data]
source = "digits"
[preprocessing]
missing = "mean"
[model]
layers = [{ type = "flatten" }, { type = "dense", units = 10, activation = "softmax" }]
[training]
loss = "sparse_categorical_crossentropy"
epochs = 1
"#,
    );
    assert_one_line_error(
        &s.kiln(&["train", &digits]),
        &["clean tabular (CSV) data", "digits"],
    );
}

#[test]
fn tampered_cleaning_bounds_are_refused_at_load_not_a_panic_in_predict() {
    let s = Sandbox::new("tabular-tampered");
    s.write("train.csv", dirty_train_csv());
    s.write("test.csv", clean_csv(200, 30));
    let spec = s.write("spec.toml", spec("train.csv", CLEANING));
    let model = s.arg("m.safetensors");
    assert_success(&s.kiln(&["train", &spec, "--out", &model]));
    tamper_metadata(&model, "kiln.table", |table| {
        let bounds = table["cleaning"]["bounds"].as_array_mut().unwrap();
        let (i, b) = bounds
            .iter_mut()
            .enumerate()
            .find(|(_, b)| b.is_array())
            .expect("a column with outlier bounds");
        let (low, high) = (b[0].clone(), b[1].clone());
        *b = serde_json::json!([high, low]);
        assert_eq!(i, 0, "x is the first column and has bounds");
    });
    let out = s.kiln(&["predict", &model, "--input", &s.arg("test.csv")]);
    assert_one_line_error(&out, &["kiln.table.cleaning.bounds[0]", "low ≤ high"]);
}

#[test]
fn a_fill_list_short_of_the_columns_is_refused_at_load_not_a_panic_in_predict() {
    let s = Sandbox::new("tabular-short-fill");
    s.write("train.csv", dirty_train_csv());
    s.write("test.csv", clean_csv(200, 30));
    let gap = s.write("gap.csv", "x,colour\nNA,red\n");
    let spec = s.write("spec.toml", spec("train.csv", CLEANING));
    let model = s.arg("m.safetensors");
    assert_success(&s.kiln(&["train", &spec, "--out", &model]));
    tamper_metadata(&model, "kiln.table", |table| {
        let fill = table["cleaning"]["fill"].as_array_mut().unwrap();
        assert_eq!(fill.len(), 2, "one value per column: {fill:?}");
        fill.pop();
    });
    let out = s.kiln(&["predict", &model, "--input", &gap]);
    assert_one_line_error(&out, &["kiln.table.cleaning.fill", "one per column (2)"]);
    assert_eq!(out.0.code(), Some(65));
}

/// A one-unit (sigmoid) model predicts class 1 where its probability is above 0.5, and
/// the CSV column holding that probability is named after class 1.
#[test]
fn a_binary_model_predicts_both_classes() {
    let s = Sandbox::new("tabular-binary");
    let rows = |from: usize| -> String {
        let body: String = (from..from + 80)
            .map(|i| {
                let x = (i % 20) as f32 / 2.0;
                format!("{x},{}\n", if x >= 5.0 { "high" } else { "low" })
            })
            .collect();
        format!("x,level\n{body}")
    };
    s.write("train.csv", rows(0));
    s.write("test.csv", rows(100));
    let spec = s.write(
        "binary.toml",
        r#"[data]
source = "csv"
train = "train.csv"
test = "test.csv"
label_column = "level"
[preprocessing]
normalization = { kind = "z_score" }
[model]
layers = [{ type = "dense", units = 1, activation = "sigmoid" }]
[training]
optimizer = { type = "adam", learning_rate = 0.1 }
loss = "binary_crossentropy"
epochs = 30
seed = 3
"#,
    );
    let model = s.arg("m.safetensors");
    assert_success(&s.kiln(&["train", &spec, "--quiet", "--out", &model]));
    let out = s.kiln(&["predict", &model, "--input", &s.arg("test.csv")]);
    assert_success(&out);
    let mut lines = out.1.lines();
    assert_eq!(
        lines.next(),
        Some("row,class,p_low"),
        "classes are sorted: high = 0, low = 1"
    );
    let mut seen = std::collections::BTreeSet::new();
    for line in lines {
        let cells: Vec<&str> = line.split(',').collect();
        let p_low: f32 = cells[2].parse().unwrap();
        assert_eq!(cells[1], if p_low > 0.5 { "low" } else { "high" }, "{line}");
        seen.insert(cells[1].to_string());
    }
    assert_eq!(seen.len(), 2, "both classes predicted:\n{}", out.1);
}
