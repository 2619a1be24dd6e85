//! Training with the Keras workflow: `compile`, then `fit` → [`History`], `evaluate`,
//! `predict`.

mod callbacks;
pub(crate) mod checkpoint;
mod denormals;
pub mod distributed;
mod fit;
mod history;
mod history_files;
mod model_checkpoint;
mod tensorboard;

pub use callbacks::{
    BatchProgress, Callback, CallbackSpec, Control, CsvLogger, EarlyStopping, Inert, ReduceLrOnPlateau,
};
pub use checkpoint::{CallbackState, Checkpoint, Progress, CHECKPOINT_FORMAT};
pub use denormals::FlushDenormals;
pub use distributed::{Collective, InProcessGroup};
pub use fit::{argmax, CheckpointTarget, Compiled, Evaluation, FitOptions, StepResult, Validation};
pub use history::{EpochLog, History};
pub use history_files::{history_csv, HistoryFiles, HISTORY_CSV, HISTORY_JSON};
pub use model_checkpoint::{fill_template, ModelCheckpoint};
pub use tensorboard::{EventWriter, TensorBoard};
