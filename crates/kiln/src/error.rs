//! The library's typed errors. Each names the file, field or value at fault and what was
//! expected, so the binary can print it as one readable line.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The OS error is part of the message, not a chained source, so printing the error
    /// with its causes (`{:#}`) does not repeat it.
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
    /// A data file whose content is not what its format promises.
    #[error("{path}: {message}")]
    Data { path: PathBuf, message: String },
    /// A data set that cannot be found locally and cannot be fetched.
    #[error("{0}")]
    DataUnavailable(String),
    /// A spec (TOML) that does not parse or describes an impossible model.
    #[error("spec {path}: {message}")]
    Spec { path: PathBuf, message: String },
    /// Layers whose shapes do not chain, or inputs whose shape the model does not accept.
    #[error("shape error: {0}")]
    Shape(String),
    /// Labels, classes or values outside what the model or loss accepts.
    #[error("invalid value: {0}")]
    Value(String),
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
    /// A model file that is not a kiln safetensors artifact.
    #[error("model {path}: {message}")]
    Artifact { path: PathBuf, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        Error::Io {
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
}
