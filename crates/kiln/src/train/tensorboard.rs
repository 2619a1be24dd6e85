//! TensorBoard event files: CRC-32C and TFRecord framing around `tensorflow.Event` messages
//! (the `prost` structs in `io::proto::event`). [`EventWriter`] writes one file;
//! [`TensorBoard`] is the callback that logs each epoch the way Keras's `TensorBoard` does.
//!
//! A file is a sequence of TFRecords, each `u64 LE length`, `masked crc32c(length bytes)`,
//! `data`, `masked crc32c(data)`; the data is a serialized `Event`. The first event holds
//! `file_version = "brain.Event:2"`; the others hold a `Summary` with one `simple_value`.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::callbacks::{Callback, Control, FitState};
use super::EpochLog;
use crate::error::{Error, Result};
use crate::io::proto::event::{Event, EventWhat, Summary, SummaryValue, SummaryValueKind};
use crate::io::proto::Message;

/// CRC-32C (Castagnoli) lookup table for the reflected polynomial 0x82F63B78.
const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc = CRC32C_TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// TFRecord's masked CRC: `((crc >> 15) | (crc << 17)) + 0xa282ead8`, wrapping.
fn masked_crc32c(data: &[u8]) -> u32 {
    crc32c(data).rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord: length, its masked CRC, the data, its masked CRC.
fn tfrecord(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

fn event(wall_time: f64, step: i64, what: EventWhat) -> Vec<u8> {
    Event {
        wall_time,
        step,
        what: Some(what),
    }
    .encode_to_vec()
}

/// `Event { file_version: "brain.Event:2" }`.
fn file_version_event(wall_time: f64) -> Vec<u8> {
    event(wall_time, 0, EventWhat::FileVersion("brain.Event:2".into()))
}

/// `Event { summary: Summary { value: [Value { tag, simple_value }] } }`.
fn scalar_event(wall_time: f64, step: i64, tag: &str, value: f32) -> Vec<u8> {
    let value = SummaryValue {
        tag: tag.into(),
        value: Some(SummaryValueKind::SimpleValue(value)),
    };
    event(
        wall_time,
        step,
        EventWhat::Summary(Summary { value: vec![value] }),
    )
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The host's name from `/etc/hostname`, else `$HOSTNAME`, else "localhost"; path
/// separators are replaced so it is safe in a file name.
fn hostname() -> String {
    let from_file = std::fs::read_to_string("/etc/hostname").ok();
    let name = [from_file, std::env::var("HOSTNAME").ok()]
        .into_iter()
        .flatten()
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into());
    name.replace(['/', '\\'], "_")
}

/// Writes one TensorBoard event file. Each record is written with a single `write` and
/// flushed, so a crash keeps every scalar logged before it.
#[derive(Debug)]
pub struct EventWriter {
    path: PathBuf,
    file: File,
}

impl EventWriter {
    /// Creates `dir` if needed and in it `events.out.tfevents.{unix_seconds}.{hostname}.{pid}.kiln`
    /// (with a `.N` suffix should that name be taken, e.g. two writers in the same second),
    /// and writes the file-version event.
    pub fn create(dir: &Path) -> Result<EventWriter> {
        std::fs::create_dir_all(dir).map_err(|e| Error::output(dir, e))?;
        let wall_time = now();
        let base = format!(
            "events.out.tfevents.{}.{}.{}.kiln",
            wall_time as u64,
            hostname(),
            std::process::id()
        );
        let mut n = 0usize;
        let (path, file) = loop {
            let name = if n == 0 {
                base.clone()
            } else {
                format!("{base}.{n}")
            };
            let path = dir.join(name);
            match File::options().write(true).create_new(true).open(&path) {
                Ok(file) => break (path, file),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => return Err(Error::output(path, e)),
            }
        };
        let mut writer = EventWriter { path, file };
        writer.write_record(&file_version_event(wall_time))?;
        Ok(writer)
    }

    /// The event file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Logs `value` under `tag` at `step` (TensorBoard's x axis), and flushes it.
    pub fn add_scalar(&mut self, tag: &str, value: f32, step: i64) -> Result<()> {
        self.write_record(&scalar_event(now(), step, tag, value))
    }

    fn write_record(&mut self, event: &[u8]) -> Result<()> {
        let record = tfrecord(event);
        self.file
            .write_all(&record)
            .and_then(|()| self.file.flush())
            .map_err(|e| Error::output(&self.path, e))
    }
}

fn logs() -> PathBuf {
    PathBuf::from("logs")
}

/// Logs each epoch's metrics for TensorBoard with Keras's layout: `log_dir/train` gets
/// `epoch_loss`, `epoch_accuracy` and `epoch_learning_rate`; `log_dir/validation` gets
/// `epoch_loss` and `epoch_accuracy`. The step is the 0-based epoch index, as in Keras.
/// The validation file is created on the first epoch that has validation metrics, as Keras
/// does, so a run without validation data leaves no empty `validation` run behind.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorBoard {
    #[serde(default = "logs")]
    pub log_dir: PathBuf,
    #[serde(skip)]
    train: Option<EventWriter>,
    #[serde(skip)]
    validation: Option<EventWriter>,
}

impl TensorBoard {
    pub fn new(log_dir: impl Into<PathBuf>) -> Self {
        TensorBoard {
            log_dir: log_dir.into(),
            train: None,
            validation: None,
        }
    }

    /// The training event file, once training has begun.
    pub fn train_path(&self) -> Option<&Path> {
        self.train.as_ref().map(EventWriter::path)
    }

    /// The validation event file, once an epoch with validation metrics has been logged.
    pub fn validation_path(&self) -> Option<&Path> {
        self.validation.as_ref().map(EventWriter::path)
    }
}

impl Default for TensorBoard {
    fn default() -> Self {
        TensorBoard::new(logs())
    }
}

/// A clone has the same settings and no open files (they are opened in `on_train_begin`).
impl Clone for TensorBoard {
    fn clone(&self) -> Self {
        TensorBoard::new(self.log_dir.clone())
    }
}

/// Equal settings; open files are state, not settings.
impl PartialEq for TensorBoard {
    fn eq(&self, other: &Self) -> bool {
        self.log_dir == other.log_dir
    }
}

impl Callback for TensorBoard {
    fn on_train_begin(&mut self, _state: &mut FitState) -> Result<()> {
        self.validation = None;
        self.train = Some(EventWriter::create(&self.log_dir.join("train"))?);
        Ok(())
    }

    fn on_epoch_end(&mut self, log: &EpochLog, _state: &mut FitState) -> Result<Control> {
        // Keras counts epochs from 0; a token stream's evaluations are placed at their step.
        let step = log.step.map_or(log.epoch.saturating_sub(1), |s| s) as i64;
        if self.train.is_none() {
            self.train = Some(EventWriter::create(&self.log_dir.join("train"))?);
        }
        if let Some(train) = self.train.as_mut() {
            train.add_scalar("epoch_loss", log.loss, step)?;
            train.add_scalar("epoch_accuracy", log.accuracy, step)?;
            train.add_scalar("epoch_learning_rate", log.learning_rate, step)?;
        }
        if log.val_loss.is_some() || log.val_accuracy.is_some() {
            if self.validation.is_none() {
                self.validation = Some(EventWriter::create(&self.log_dir.join("validation"))?);
            }
            if let Some(val) = self.validation.as_mut() {
                if let Some(loss) = log.val_loss {
                    val.add_scalar("epoch_loss", loss, step)?;
                }
                if let Some(accuracy) = log.val_accuracy {
                    val.add_scalar("epoch_accuracy", accuracy, step)?;
                }
            }
        }
        Ok(Control::Continue)
    }

    fn on_train_end(&mut self, _state: &mut FitState) -> Result<()> {
        self.train = None;
        self.validation = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh folder under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(label: &str) -> TempDir {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("kiln-tb-{label}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    #[allow(clippy::manual_rotate)]
    fn masked_crc_follows_the_tfrecord_formula() {
        for data in [&b""[..], b"123456789", b"brain.Event:2"] {
            let crc = crc32c(data);
            assert_eq!(
                masked_crc32c(data),
                ((crc >> 15) | (crc << 17)).wrapping_add(0xa282_ead8)
            );
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Golden bytes from TensorBoard 2.21's own `event_pb2.Event(...).SerializeToString()`
    /// and its `masked_crc32c`, framed as its record reader expects.
    #[test]
    fn records_match_tensorboards_own_encoding() {
        let version = file_version_event(1.5);
        assert_eq!(version, hex("09000000000000f83f1a0d627261696e2e4576656e743a32"));
        assert_eq!(
            tfrecord(&version),
            hex("1800000000000000a37f4b2209000000000000f83f1a0d627261696e2e4576656e743a322a28646c")
        );
        let scalar = scalar_event(1.5, 7, "epoch_loss", 0.25);
        assert_eq!(
            scalar,
            hex("09000000000000f83f10072a130a110a0a65706f63685f6c6f7373150000803e")
        );
        assert_eq!(
            tfrecord(&scalar),
            hex("200000000000000029eda95009000000000000f83f10072a130a110a0a65706f63685f6c6f7373150000803e43afa828")
        );
    }

    /// Splits a file into its records, checking both CRCs of each.
    fn records(bytes: &[u8]) -> Vec<&[u8]> {
        let mut pos = 0;
        let mut out = Vec::new();
        let u32_at = |p: usize| u32::from_le_bytes(bytes[p..p + 4].try_into().unwrap());
        while pos < bytes.len() {
            let len_bytes = &bytes[pos..pos + 8];
            assert_eq!(u32_at(pos + 8), masked_crc32c(len_bytes), "length crc");
            let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
            let data = &bytes[pos + 12..pos + 12 + len];
            assert_eq!(u32_at(pos + 12 + len), masked_crc32c(data), "data crc");
            out.push(data);
            pos += 16 + len;
        }
        assert_eq!(pos, bytes.len());
        out
    }

    /// An event as (wall_time, step, file_version, [(tag, simple_value)]).
    type Decoded = (f64, i64, Option<String>, Vec<(String, f32)>);

    fn decode_event(buf: &[u8]) -> Decoded {
        let event = Event::decode(buf).unwrap();
        let (mut version, mut values) = (None, Vec::new());
        match event.what {
            Some(EventWhat::FileVersion(v)) => version = Some(v),
            Some(EventWhat::Summary(summary)) => {
                for v in summary.value {
                    let Some(SummaryValueKind::SimpleValue(x)) = v.value else {
                        panic!("a value without simple_value: {v:?}")
                    };
                    values.push((v.tag, x));
                }
            }
            None => panic!("an event with neither a version nor a summary"),
        }
        (event.wall_time, event.step, version, values)
    }

    fn tiny_model() -> crate::nn::Sequential {
        let layers = serde_json::from_str(r#"[{"type": "dense", "units": 2}]"#).unwrap();
        crate::nn::Sequential::new(&[3], layers, 0).unwrap()
    }

    #[test]
    fn written_scalars_read_back() {
        let dir = TempDir::new("scalars");
        let run = dir.0.join("nested/run");
        let mut w = EventWriter::create(&run).unwrap();
        let name = w.path().file_name().unwrap().to_str().unwrap().to_string();
        assert!(name.starts_with("events.out.tfevents."), "{name}");
        assert!(name.ends_with(&format!(".{}.kiln", std::process::id())), "{name}");
        assert_eq!(w.path().parent(), Some(run.as_path()));
        w.add_scalar("epoch_loss", 0.25, 0).unwrap();
        w.add_scalar("epoch_accuracy", 0.875, 7).unwrap();
        w.add_scalar("negative_step", -1.5, -3).unwrap();

        // Read while the writer is still open: every record is already on disk.
        let bytes = std::fs::read(w.path()).unwrap();
        let events: Vec<Decoded> = records(&bytes).into_iter().map(decode_event).collect();
        assert_eq!(events.len(), 4);
        let start = now();
        for e in &events {
            assert!(e.0 > 1.0e9 && e.0 <= start, "wall_time {}", e.0);
        }
        assert_eq!(events[0].1, 0);
        assert_eq!(events[0].2.as_deref(), Some("brain.Event:2"));
        assert!(events[0].3.is_empty());
        for e in &events[1..] {
            assert_eq!(e.2, None, "only the first event has a file_version");
        }
        let scalars: Vec<(i64, Vec<(String, f32)>)> =
            events[1..].iter().map(|e| (e.1, e.3.clone())).collect();
        assert_eq!(
            scalars,
            [
                (0, vec![("epoch_loss".to_string(), 0.25)]),
                (7, vec![("epoch_accuracy".to_string(), 0.875)]),
                (-3, vec![("negative_step".to_string(), -1.5)]),
            ]
        );
    }

    #[test]
    fn two_writers_in_one_folder_get_two_files() {
        let dir = TempDir::new("two");
        let a = EventWriter::create(&dir.0).unwrap();
        let b = EventWriter::create(&dir.0).unwrap();
        assert_ne!(a.path(), b.path());
        assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 2);
    }

    #[test]
    fn create_names_the_path_that_failed() {
        let dir = TempDir::new("blocked");
        std::fs::create_dir_all(&dir.0).unwrap();
        let file = dir.0.join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let err = EventWriter::create(&file.join("run")).unwrap_err();
        assert!(err.to_string().contains("not-a-dir"), "{err}");
    }

    #[test]
    fn callback_logs_keras_layout() {
        let dir = TempDir::new("callback");
        let mut tb: TensorBoard = toml::from_str(&format!("log_dir = {:?}", dir.0)).unwrap();
        assert_eq!(tb, TensorBoard::new(&dir.0));
        let mut model = tiny_model();
        tb.on_train_begin(&mut FitState::with_learning_rate(&mut model, 0.001))
            .unwrap();
        assert!(tb.validation_path().is_none());
        let log = |epoch, val: Option<f32>| EpochLog {
            epoch,
            loss: 1.0 / epoch as f32,
            accuracy: 0.5 + epoch as f32 / 10.0,
            val_loss: val,
            val_accuracy: val.map(|v| v / 2.0),
            seconds: 1.0,
            train_seconds: 1.0,
            learning_rate: 0.01,
            skipped_batches: 0,
            communication_seconds: 0.0,
            step: None,
        };
        tb.on_epoch_end(
            &log(1, Some(0.75)),
            &mut FitState::with_learning_rate(&mut model, 0.001),
        )
        .unwrap();
        tb.on_epoch_end(
            &log(2, Some(0.5)),
            &mut FitState::with_learning_rate(&mut model, 0.001),
        )
        .unwrap();
        let train = tb.train_path().unwrap().to_path_buf();
        let val = tb.validation_path().unwrap().to_path_buf();
        assert_eq!(train.parent().unwrap(), dir.0.join("train"));
        assert_eq!(val.parent().unwrap(), dir.0.join("validation"));
        tb.on_train_end(&mut FitState::with_learning_rate(&mut model, 0.001))
            .unwrap();

        let read = |path: &Path| -> Vec<(i64, String, f32)> {
            let bytes = std::fs::read(path).unwrap();
            records(&bytes)[1..]
                .iter()
                .flat_map(|r| {
                    let (_, step, _, values) = decode_event(r);
                    values.into_iter().map(move |(t, v)| (step, t, v))
                })
                .collect()
        };
        let s = |step: i64, tag: &str, v: f32| (step, tag.to_string(), v);
        assert_eq!(
            read(&train),
            [
                s(0, "epoch_loss", 1.0),
                s(0, "epoch_accuracy", 0.6),
                s(0, "epoch_learning_rate", 0.01),
                s(1, "epoch_loss", 0.5),
                s(1, "epoch_accuracy", 0.7),
                s(1, "epoch_learning_rate", 0.01),
            ]
        );
        assert_eq!(
            read(&val),
            [
                s(0, "epoch_loss", 0.75),
                s(0, "epoch_accuracy", 0.375),
                s(1, "epoch_loss", 0.5),
                s(1, "epoch_accuracy", 0.25),
            ]
        );
    }

    #[test]
    fn spec_defaults_and_rejects_unknown_fields() {
        let tb: TensorBoard = toml::from_str("").unwrap();
        assert_eq!(tb.log_dir, PathBuf::from("logs"));
        assert_eq!(tb, TensorBoard::default());
        assert!(toml::from_str::<TensorBoard>("histogram_freq = 1").is_err());
    }

    #[test]
    fn callback_without_validation_leaves_no_validation_run() {
        let dir = TempDir::new("noval");
        let mut tb = TensorBoard::new(&dir.0);
        let mut model = tiny_model();
        tb.on_train_begin(&mut FitState::with_learning_rate(&mut model, 0.001))
            .unwrap();
        let log = EpochLog {
            epoch: 1,
            loss: 1.0,
            accuracy: 0.5,
            val_loss: None,
            val_accuracy: None,
            seconds: 1.0,
            train_seconds: 1.0,
            learning_rate: 0.01,
            skipped_batches: 0,
            communication_seconds: 0.0,
            step: None,
        };
        tb.on_epoch_end(&log, &mut FitState::with_learning_rate(&mut model, 0.001))
            .unwrap();
        tb.on_train_end(&mut FitState::with_learning_rate(&mut model, 0.001))
            .unwrap();
        assert!(dir.0.join("train").is_dir());
        assert!(!dir.0.join("validation").exists());
    }
}
