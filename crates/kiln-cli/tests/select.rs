//! `kiln cv`, `kiln tune` and `kiln ensemble` end to end on the embedded digits: what they
//! print and write, that an ensemble file works wherever a model does, and one-line errors
//! for bad folds, spaces and member counts.

mod common;

use common::*;

const SPEC: &str = r#"
[data]
source = "digits"
[preprocessing]
normalization = { kind = "scale", max = 16.0 }
[model]
layers = [
  { type = "flatten" },
  { type = "dense", units = 32, activation = "relu" },
  { type = "dropout", rate = 0.1 },
  { type = "dense", units = 10, activation = "softmax" },
]
[training]
optimizer = { type = "adam", learning_rate = 0.003 }
loss = "sparse_categorical_crossentropy"
epochs = 4
validation_split = 0.1
seed = 5
"#;

#[test]
fn cv_prints_each_fold_and_the_mean_and_std() {
    let s = Sandbox::new("cv");
    let spec = s.write("digits.toml", SPEC);
    let out = s.kiln(&["cv", &spec, "--folds", "5"]);
    assert_success(&out);
    let folds = out.1.lines().filter(|l| l.starts_with("fold ")).count();
    assert_eq!(folds, 5, "{}", out.1);
    let last = out.1.lines().last().unwrap();
    assert!(
        last.starts_with("accuracy: 0.")
            && last.contains(" ± ")
            && last.ends_with("(mean ± std over 5 folds)"),
        "{last}"
    );
    assert_one_line_error(
        &s.kiln(&["cv", &spec, "--folds", "1"]),
        &["--folds = 1", "between 2 and"],
    );
}

#[test]
fn tune_ranks_trials_writes_the_csv_and_a_best_spec_that_trains() {
    let s = Sandbox::new("tune");
    let spec = s.write("digits.toml", SPEC);
    let space = s.write(
        "space.toml",
        "\"training.optimizer.learning_rate\" = [0.0001, 0.01]\n\"model.layers[1].units\" = [16, 64]\n",
    );
    let out_dir = s.arg("search");
    let out = s.kiln(&["tune", &spec, "--space", &space, "--out-dir", &out_dir]);
    assert_success(&out);
    assert!(
        out.1
            .contains("grid (4 points) search, 4 trials plus the baseline, scored by validation accuracy"),
        "{}",
        out.1
    );
    let table_header = out.1.lines().find(|l| l.starts_with("rank")).expect("a table");
    assert!(
        table_header.contains("training.optimizer.learning_rate")
            && table_header.contains("model.layers[1].units")
    );
    let csv = std::fs::read_to_string(s.path("search/trials.csv")).unwrap();
    assert_eq!(csv.lines().count(), 6, "{csv}");
    let best = s.path("search/best.toml");
    let text = std::fs::read_to_string(&best).unwrap();
    assert!(text.starts_with("# Written by `kiln tune`"), "{text}");
    assert_success(&s.kiln(&["train", best.to_str().unwrap(), "--quiet"]));

    let misspelled = s.write("bad.toml", "\"training.optimizer.learning_rte\" = [0.01]\n");
    assert_one_line_error(
        &s.kiln(&["tune", &spec, "--space", &misspelled]),
        &[
            &misspelled,
            "key `training.optimizer.learning_rte`",
            "unknown field `learning_rte`",
        ],
    );
    let beyond = s.write("beyond.toml", "\"model.layers[9].units\" = [8]\n");
    assert_one_line_error(
        &s.kiln(&["tune", &spec, "--space", &beyond]),
        &[
            "key `model.layers[9].units`",
            "`model.layers` has 4 entries, no index 9",
        ],
    );
    let range = s.write(
        "range.toml",
        "\"model.layers[1].units\" = { int_uniform = [8, 64] }\n",
    );
    let random = s.kiln(&[
        "tune",
        &spec,
        "--space",
        &range,
        "--trials",
        "2",
        "--out-dir",
        &out_dir,
    ]);
    assert_success(&random);
    assert!(random.1.contains("random search, 2 trials"), "{}", random.1);
}

#[test]
fn an_ensemble_file_works_with_eval_predict_and_inspect() {
    let s = Sandbox::new("ensemble");
    let spec = s.write("digits.toml", SPEC);
    let model = s.arg("bag.safetensors");
    let out = s.kiln(&["ensemble", &spec, "--members", "3", "--out", &model]);
    assert_success(&out);
    assert_eq!(
        out.1.lines().filter(|l| l.starts_with("member ")).count(),
        3,
        "{}",
        out.1
    );
    let reported = metric(&out.1, "ensemble:", "test_accuracy ");
    let eval = s.kiln(&["eval", &model]);
    assert_success(&eval);
    assert_eq!(metric(&eval.1, "test_loss", "test_accuracy: "), reported);
    let inspect = s.kiln(&["inspect", &model]);
    assert_success(&inspect);
    assert!(
        inspect.1.contains("\"members\": 3") && inspect.1.contains("\"combine\": \"average\""),
        "{}",
        inspect.1
    );
    let rows: String = (0..2)
        .map(|r| {
            (0..64)
                .map(|i| ((i * 7 + r) % 17).to_string())
                .collect::<Vec<_>>()
                .join(",")
                + "\n"
        })
        .collect();
    let input = s.write("rows.csv", rows);
    let predict = s.kiln(&["predict", &model, "--input", &input]);
    assert_success(&predict);
    assert_eq!(predict.1.lines().count(), 3, "{}", predict.1);

    let small = s.arg("small.safetensors");
    assert_one_line_error(
        &s.kiln(&["compress", &model, "--out", &small, "--quantize", "int8"]),
        &["is an ensemble of 3 models"],
    );
    assert_one_line_error(
        &s.kiln(&["ensemble", &spec, "--members", "1", "--out", &small]),
        &["--members = 1", "at least 2 members"],
    );
}

/// `test_fraction = 0` holds nothing out, so cross-validation folds every row of the file;
/// training, which reports test metrics, refuses it naming the spec.
#[test]
fn cv_with_test_fraction_0_uses_every_row_and_train_refuses_it() {
    let s = Sandbox::new("cv-all-rows");
    let mut csv = String::from("x,y,label\n");
    for i in 0..60 {
        csv += &format!("{},{},{}\n", i % 7, (i * 3) % 5, i % 3);
    }
    s.write("rows.csv", &csv);
    let spec = s.write(
        "all.toml",
        r#"[data]
source = "csv"
train = "rows.csv"
test_fraction = 0
[model]
layers = [{ type = "dense", units = 3, activation = "softmax" }]
[training]
optimizer = { type = "adam", learning_rate = 0.01 }
loss = "sparse_categorical_crossentropy"
epochs = 1
"#,
    );
    let out = s.kiln(&["cv", &spec, "--folds", "3"]);
    assert_success(&out);
    let mut held_out = 0;
    for line in out.1.lines().filter(|l| l.starts_with("fold ")) {
        let count = |key: &str| -> usize {
            let rest = &line[line.find(key).unwrap() + key.len()..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        assert_eq!(count("trained on ") + count("held out "), 60, "{line}");
        held_out += count("held out ");
    }
    assert_eq!(held_out, 60, "every row is held out once:\n{}", out.1);
    let train = s.kiln(&["train", &spec, "--no-checkpoint"]);
    assert_one_line_error(&train, &["all.toml", "test_fraction", "kiln cv"]);
    assert_eq!(train.0.code(), Some(65));
}
