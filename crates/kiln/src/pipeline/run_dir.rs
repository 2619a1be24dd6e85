//! Run folders and resume: what a run folder holds, creating one without overwriting
//! another run, checking that a checkpoint belongs to the run that resumes it, and
//! cleaning up after a killed write.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::RunOptions;
use crate::error::{Error, Result};
use crate::spec::Spec;
use crate::train::checkpoint::{as_read_back, first_difference};
use crate::train::{
    Callback, CallbackSpec, Checkpoint, CheckpointTarget, Collective, HistoryFiles, Inert, ModelWriter,
};

/// The checkpoint's file name inside a run folder.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";

/// How far a run trains: epochs of samples, or steps of a token stream (a resumed run's
/// total either way).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Goal {
    Epochs(usize),
    Steps(usize),
}

/// A run's callbacks (the spec's, then the history files) and the checkpoint it resumes.
pub(crate) struct RunSetup {
    pub callbacks: Vec<Box<dyn Callback>>,
    pub resume_from: Option<Checkpoint>,
    checkpoint_path: Option<PathBuf>,
}

impl RunSetup {
    /// Where `fit` keeps the checkpoint, storing `context` with it.
    pub fn checkpoint_target<'a>(&'a self, context: &'a serde_json::Value) -> Option<CheckpointTarget<'a>> {
        self.checkpoint_path
            .as_deref()
            .map(|path| CheckpointTarget { path, context })
    }
}

/// Builds the spec's callbacks (relative file names taken inside the run folder; on ranks
/// other than 0 a file writer is a stand-in that writes nothing), adds the run folder's
/// history files, and prepares the folder: created for a fresh run, its checkpoint loaded
/// and checked against `context` and `goal` when resuming (and sent to every rank).
pub(crate) fn callbacks_for_run(
    specs: &[CallbackSpec],
    writer: Arc<dyn ModelWriter>,
    options: &RunOptions,
    context: &serde_json::Value,
    goal: Goal,
) -> Result<RunSetup> {
    let is_root = options.distributed.is_none_or(|g| g.rank() == 0);
    let mut callbacks = specs
        .iter()
        .map(|c| {
            let mut c = c.clone();
            if let Some(dir) = options.run_dir {
                c.resolve_paths(dir);
            }
            let built = c.build(Some(writer.clone()))?;
            Ok(match c.writes_files() && !is_root {
                true => Box::new(Inert::replacing(built.as_ref())) as Box<dyn Callback>,
                false => built,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let checkpoint_path = options
        .run_dir
        .filter(|_| options.checkpoints)
        .map(|d| d.join(CHECKPOINT_FILE));
    let resume_from = match (options.run_dir, options.resume) {
        (Some(dir), _) if is_root => {
            callbacks.push(Box::new(HistoryFiles::new(dir)));
            prepare_run_dir(dir, options.resume, context, goal)?
        }
        (Some(dir), _) => {
            // Another rank's run folder: hold the history writer's place, touch nothing.
            callbacks.push(Box::new(Inert::replacing(&HistoryFiles::new(dir))));
            None
        }
        (None, true) if is_root => {
            return Err(Error::unsupported(
                "resuming",
                "it needs the run folder to resume from",
            ))
        }
        (None, _) => None,
    };
    let resume_from = match options.distributed {
        Some(group) => share_checkpoint(group, resume_from)?,
        None => resume_from,
    };
    Ok(RunSetup {
        callbacks,
        resume_from,
        checkpoint_path,
    })
}

/// Rank 0's checkpoint to resume from, on every rank (none: a fresh run), so ranks on
/// machines that do not share rank 0's run folder resume too.
fn share_checkpoint(group: &dyn Collective, mine: Option<Checkpoint>) -> Result<Option<Checkpoint>> {
    let origin = Path::new("rank 0's checkpoint");
    let mut bytes = match (&mine, group.rank()) {
        (Some(c), 0) => c.encode(origin)?,
        _ => Vec::new(),
    };
    group.broadcast_bytes(&mut bytes);
    match (mine, bytes.is_empty()) {
        (Some(c), _) => Ok(Some(c)),
        (None, true) => Ok(None),
        (None, false) => Checkpoint::decode(&bytes, origin).map(Some),
    }
}

/// A run folder without a checkpoint: a missing input, named as the folder.
fn no_checkpoint(dir: &Path) -> Error {
    let why = format!("holds no {CHECKPOINT_FILE} to resume from");
    Error::io(dir, std::io::Error::new(std::io::ErrorKind::NotFound, why))
}

/// The spec a run folder's checkpoint was trained from (to resume without naming it).
pub fn spec_of_run(dir: &Path) -> Result<Spec> {
    let path = dir.join(CHECKPOINT_FILE);
    if !path.exists() {
        return Err(no_checkpoint(dir));
    }
    let checkpoint = Checkpoint::load(&path)?;
    let spec = checkpoint
        .progress
        .context
        .get("spec")
        .cloned()
        .unwrap_or_default();
    Spec::from_json(spec, &path)
}

/// Creates the run folder; when resuming, loads its checkpoint and checks that it was made
/// by this spec on this data and has epochs left to train. A fresh run refuses a folder
/// that already holds a checkpoint, so nothing saved is overwritten.
fn prepare_run_dir(
    dir: &Path,
    resume: bool,
    context: &serde_json::Value,
    goal: Goal,
) -> Result<Option<Checkpoint>> {
    let path = dir.join(CHECKPOINT_FILE);
    if !resume {
        if path.exists() {
            return Err(Error::Unsupported {
                operation: format!("starting a new run in {}", dir.display()),
                reason: format!(
                    "{} already holds a training checkpoint; resume it, or choose another run folder",
                    dir.display()
                ),
            });
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::output(dir, e))?;
        return Ok(None);
    }
    if !path.exists() {
        return Err(no_checkpoint(dir));
    }
    remove_interrupted_writes(dir)?;
    let checkpoint = Checkpoint::load(&path)?;
    let p = &checkpoint.progress;
    if let Some(field) = first_difference(&comparable(&p.context), &comparable(context), "") {
        return Err(Error::data(
            &path,
            format!("was made with a different `{field}` than this run's; resume with the spec and data it was made with"),
        ));
    }
    if p.stopped {
        return Err(Error::data(
            &path,
            format!(
                "training stopped early after epoch {} (a callback ended it); nothing to resume",
                p.epochs_done
            ),
        ));
    }
    let (done, asked, unit) = match goal {
        Goal::Epochs(epochs) => (p.epochs_done, epochs, "epochs"),
        Goal::Steps(steps) => (p.steps_done, steps, "steps"),
    };
    if done >= asked {
        return Err(Error::data(
            &path,
            format!("already holds {done} trained {unit} of the {asked} asked for; ask for more {unit} to train further"),
        ));
    }
    Ok(Some(checkpoint))
}

/// Deletes the temporary files of writes a killed run left unfinished (`NAME.tmp-PID`
/// for the run folder's own files); the files they were replacing are intact.
fn remove_interrupted_writes(dir: &Path) -> Result<()> {
    let ours = [
        CHECKPOINT_FILE,
        "history.json",
        "history.csv",
        "model.safetensors",
    ];
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let leftover = ours.iter().any(|f| {
            name.strip_prefix(f)
                .and_then(|rest| rest.strip_prefix(".tmp-"))
                .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
        });
        if leftover && entry.path().is_file() {
            std::fs::remove_file(entry.path()).map_err(|e| Error::output(entry.path(), e))?;
        }
    }
    Ok(())
}

/// The context with what a resumed run may change left out: the epoch or step count (it
/// may ask for more) and the name (the same spec under another file name).
fn comparable(context: &serde_json::Value) -> serde_json::Value {
    let mut c = as_read_back(context);
    if let Some(spec) = c.get_mut("spec").and_then(|s| s.as_object_mut()) {
        spec.remove("name");
        if let Some(t) = spec.get_mut("training").and_then(|t| t.as_object_mut()) {
            t.remove("epochs");
            t.remove("steps");
        }
    }
    c
}
