//! TensorBoard event files that TensorBoard itself reads back: scalars written with
//! [`EventWriter`] and by the [`TensorBoard`] callback (Keras's `train`/`validation` runs)
//! are decoded by `tests/fixtures/read_tensorboard.py` with TensorBoard's own readers.
//!
//! That part needs `$KILN_PYTHON`, a Python with `tensorboard` installed
//! (`python3 -m venv /tmp/tb && /tmp/tb/bin/pip install tensorboard`); without it the test
//! writes the files and skips the check with a note.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln::nn::Sequential;
use kiln::train::{Callback, EpochLog, EventWriter, FitState, TensorBoard};

/// run → tag → [(step, value)], as the script prints it.
type Scalars = BTreeMap<String, BTreeMap<String, Vec<(i64, f32)>>>;

/// A fresh folder (temp dir + process id + time), removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("kiln-{test}-{}-{nanos}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tiny_model() -> Sequential {
    let layers = serde_json::from_str(r#"[{"type": "dense", "units": 2}]"#).unwrap();
    Sequential::new(&[3], layers, 0).unwrap()
}

/// Writes a `custom` run with EventWriter and `train`/`validation` runs with the callback;
/// returns what TensorBoard should read.
fn write_logs(dir: &Path) -> Scalars {
    let mut expected = Scalars::new();
    let mut push = |run: &str, tag: &str, step: i64, value: f32| {
        expected
            .entry(run.into())
            .or_default()
            .entry(tag.into())
            .or_default()
            .push((step, value))
    };

    let mut w = EventWriter::create(&dir.join("custom")).unwrap();
    // Steps only grow: TensorBoard drops ("purges") later-step points when a step goes back.
    let points: [(&str, i64, f32); 6] = [
        ("loss", 0, 2.417_93),
        ("metrics/accuracy", 0, 0.1),
        ("loss", 1, 0.712_4),
        ("metrics/accuracy", 1, 0.987_654_3),
        ("tiny and huge", 300, -3.4e38),
        ("loss", 1 << 33, 1.0e-30),
    ];
    for (tag, step, value) in points {
        w.add_scalar(tag, value, step).unwrap();
        push("custom", tag, step, value);
    }
    drop(w);

    let mut tb: TensorBoard = toml::from_str(&format!("log_dir = {:?}", dir)).unwrap();
    let mut model = tiny_model();
    tb.on_train_begin(&mut FitState::with_learning_rate(&mut model, 0.001))
        .unwrap();
    for epoch in 1..=3 {
        let log = EpochLog {
            epoch,
            loss: 1.5 / epoch as f32,
            accuracy: 0.6 + 0.1 * epoch as f32,
            val_loss: Some(1.7 / epoch as f32),
            val_accuracy: Some(0.55 + 0.1 * epoch as f32),
            seconds: 0.1,
            train_seconds: 0.1,
            learning_rate: 0.001 / epoch as f32,
            skipped_batches: 0,
            communication_seconds: 0.0,
            step: None,
        };
        tb.on_epoch_end(&log, &mut FitState::with_learning_rate(&mut model, 0.001))
            .unwrap();
        let step = epoch as i64 - 1;
        push("train", "epoch_loss", step, log.loss);
        push("train", "epoch_accuracy", step, log.accuracy);
        push("train", "epoch_learning_rate", step, log.learning_rate);
        push("validation", "epoch_loss", step, log.val_loss.unwrap());
        push("validation", "epoch_accuracy", step, log.val_accuracy.unwrap());
    }
    tb.on_train_end(&mut FitState::with_learning_rate(&mut model, 0.001))
        .unwrap();

    for points in expected.values_mut().flat_map(|run| run.values_mut()) {
        points.sort_by_key(|p| p.0);
    }
    expected
}

#[test]
#[ignore = "needs $KILN_PYTHON with tensorboard; .ci/run runs it"]
fn tensorboard_reads_what_kiln_writes() {
    let dir = TempDir::new("tensorboard");
    let expected = write_logs(&dir.0);
    for run in ["custom", "train", "validation"] {
        let files: Vec<_> = std::fs::read_dir(dir.0.join(run)).unwrap().collect();
        assert_eq!(files.len(), 1, "one event file in {run}");
    }

    let python = std::env::var_os("KILN_PYTHON")
        .filter(|p| !p.is_empty())
        .expect("set KILN_PYTHON to a Python with tensorboard");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/read_tensorboard.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(&dir.0)
        .output()
        .unwrap_or_else(|e| panic!("running {python:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script:?} failed ({}):\n{stderr}\n{stdout}",
        out.status
    );
    println!("read_tensorboard.py: {}", stdout.trim());

    let read: BTreeMap<String, BTreeMap<String, Vec<(i64, f64)>>> =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let read: Scalars = read
        .into_iter()
        .map(|(run, tags)| {
            let tags = tags
                .into_iter()
                .map(|(tag, points)| {
                    let points = points
                        .into_iter()
                        // TensorBoard holds the f32 as a Python float; serde_json may parse that
                        // decimal 1 ulp off in f64, which the rounding to f32 removes.
                        .map(|(step, v)| (step, v as f32))
                        .collect();
                    (tag, points)
                })
                .collect();
            (run, tags)
        })
        .collect();
    assert_eq!(read, expected);
    println!(
        "TensorBoard read {} runs, {} scalars, all equal to what was written",
        read.len(),
        read.values()
            .flat_map(|r| r.values())
            .map(Vec::len)
            .sum::<usize>()
    );
}
