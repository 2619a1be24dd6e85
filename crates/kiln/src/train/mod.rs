//! Training with the Keras workflow: `compile`, then `fit` → [`History`], `evaluate`,
//! `predict`.

mod callbacks;
mod denormals;
mod fit;
mod history;

pub use callbacks::{Callback, CallbackSpec, Control, CsvLogger, EarlyStopping, ReduceLrOnPlateau};
pub use denormals::FlushDenormals;
pub use fit::{argmax, Compiled, Evaluation, FitOptions, StepResult, Validation};
pub use history::{EpochLog, History};
