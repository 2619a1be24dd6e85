//! The library's typed errors. Each names the file, field or value at fault and what was
//! expected, so the binary can print it as one readable line.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The OS error is part of the message, not a chained source, so printing the error
    /// with its causes (`{:#}`) does not repeat it.
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
    /// A file or folder kiln was asked to write that could not be created or written (a
    /// missing parent folder, no permission, a full disk); kept apart from [`Error::Io`],
    /// which is about reading, so a caller can tell "cannot read the input" from "cannot
    /// save the output".
    #[error("{path}: {cause}")]
    Output { path: PathBuf, cause: std::io::Error },
    /// A data file whose content is not what its format promises.
    #[error("{path}: {message}")]
    Data { path: PathBuf, message: String },
    /// A data set that cannot be found locally and cannot be fetched.
    #[error("{0}")]
    DataUnavailable(String),
    /// A spec (TOML) that does not parse or describes an impossible model.
    #[error("spec {path}: {message}")]
    Spec { path: PathBuf, message: String },
    /// A loss that stopped being a finite number: training cannot meaningfully go on.
    #[error(
        "training diverged: the loss became {loss} at epoch {epoch}, step {step} of {steps}; \
         lower the learning rate, clip gradients, or skip non-finite batches"
    )]
    Diverged {
        epoch: usize,
        step: usize,
        steps: usize,
        loss: f32,
    },
    /// A setting (a spec field, an option, a flag or an argument) whose value it does not
    /// accept. `field` is the name the user wrote (`dropout`, `--top-p`,
    /// `learning_rate_schedule.boundaries`).
    #[error("{field} = {value}: expected {expected}")]
    InvalidSetting {
        field: String,
        value: String,
        expected: String,
    },
    /// A tensor, sample or layer whose shape does not fit where it goes.
    #[error("{context}: expected {expected}, got {found}")]
    ShapeMismatch {
        context: String,
        expected: String,
        found: String,
    },
    /// A label (class index) the model's output or the metric cannot represent.
    #[error("label {label} is out of range for {classes} classes (labels must be 0..{})", classes.saturating_sub(1))]
    LabelOutOfRange { label: i64, classes: usize },
    /// A token id outside the model's or tokenizer's vocabulary.
    #[error("token id {token} is outside the vocabulary of {vocab}")]
    TokenOutOfRange { token: usize, vocab: usize },
    /// Fewer items (samples, tokens, batches, folds) than the operation needs.
    #[error("{what}: {found} is fewer than the {needed} needed")]
    TooFew {
        what: String,
        found: usize,
        needed: usize,
    },
    /// A missing value in a data row that the model or the cleaning settings cannot fill.
    #[error("row {row} has a missing value in {column}; {hint}")]
    MissingValue {
        row: usize,
        column: String,
        hint: String,
    },
    /// Two things that must agree and do not: a checkpoint and the run resuming it, a model
    /// and the kind of data it is given, ensemble members, the weights and the parameters.
    #[error("{what}: expected {expected}, found {found}")]
    Mismatch {
        what: String,
        expected: String,
        found: String,
    },
    /// A layer that cannot be built as specified, or not on the input it receives.
    #[error("layer {index} ({kind}): {message}")]
    Layer {
        index: usize,
        kind: String,
        message: String,
    },
    /// Something (a layer's parameters, a sample) larger than the memory this machine has
    /// left, or than kiln accepts: caught before allocating.
    #[error("{what} needs {}, but only {} of memory is available", human_bytes(*needed), human_bytes(*available))]
    TooLarge {
        what: String,
        needed: u64,
        available: u64,
    },
    /// An operation this model, data set or setting combination does not support.
    #[error("{operation} is not supported: {reason}")]
    Unsupported { operation: String, reason: String },
    /// Stored state (a checkpoint's history or callback state) that does not decode.
    #[error("{what} is invalid: {message}")]
    Corrupt { what: String, message: String },
    /// A model file that is not a kiln safetensors artifact.
    #[error("model {path}: {message}")]
    Artifact { path: PathBuf, message: String },
}

/// A byte count for a message: "3.2 GiB".
pub fn human_bytes(bytes: u64) -> String {
    match bytes {
        u64::MAX => "more than 16 EiB".into(),
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b => format!("{b} bytes"),
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause,
        }
    }

    /// An error writing `path` (see [`Error::Output`]).
    pub fn output(path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        Error::Output {
            path: path.into(),
            cause,
        }
    }

    pub fn data(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Data {
            path: path.into(),
            message: message.into(),
        }
    }

    pub fn setting(
        field: impl Into<String>,
        value: impl std::fmt::Display,
        expected: impl Into<String>,
    ) -> Self {
        Error::InvalidSetting {
            field: field.into(),
            value: value.to_string(),
            expected: expected.into(),
        }
    }

    pub fn shape(
        context: impl Into<String>,
        expected: impl std::fmt::Display,
        found: impl std::fmt::Display,
    ) -> Self {
        Error::ShapeMismatch {
            context: context.into(),
            expected: expected.to_string(),
            found: found.to_string(),
        }
    }

    pub fn mismatch(
        what: impl Into<String>,
        expected: impl std::fmt::Display,
        found: impl std::fmt::Display,
    ) -> Self {
        Error::Mismatch {
            what: what.into(),
            expected: expected.to_string(),
            found: found.to_string(),
        }
    }

    pub fn too_few(what: impl Into<String>, found: usize, needed: usize) -> Self {
        Error::TooFew {
            what: what.into(),
            found,
            needed,
        }
    }

    pub fn unsupported(operation: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Unsupported {
            operation: operation.into(),
            reason: reason.into(),
        }
    }
}
