//! The one trainer: [`Trainer`] fits any [`crate::nn::Model`] (Keras's `compile` + `fit`)
//! on samples in epochs or on a token stream in steps, with callbacks, checkpoints and
//! exact resume, and evaluates it.

mod callbacks;
pub(crate) mod checkpoint;
mod denormals;
pub mod distributed;
mod evaluate;
mod fit;
mod history;
mod history_files;
mod model_checkpoint;
mod tensorboard;
mod trainer;

pub use callbacks::{
    BatchProgress, Callback, CallbackSpec, Control, CsvLogger, EarlyStopping, FitState, Inert,
    ReduceLrOnPlateau,
};
pub use checkpoint::{CallbackState, Checkpoint, Progress, CHECKPOINT_FORMAT};
pub use denormals::FlushDenormals;
pub use distributed::{Collective, InProcessGroup};
pub use evaluate::{evaluate, EvalData, Evaluation, ValidationWindows};
pub use fit::{CheckpointTarget, FitOptions, TokenWindows, TrainData, Validation};
pub use history::{EpochLog, History};
pub use history_files::{history_csv, HistoryFiles, HISTORY_CSV, HISTORY_JSON};
pub use model_checkpoint::{fill_template, ModelCheckpoint, ModelWriter};
pub use tensorboard::{EventWriter, TensorBoard};
pub use trainer::{StepResult, Trainer};
