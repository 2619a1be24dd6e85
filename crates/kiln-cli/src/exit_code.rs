//! How a failed command ends: an exit status from BSD's `sysexits.h`, so that a script can
//! tell a typo in its command line from a malformed file, a missing input, an output that
//! cannot be written, and a bug in kiln.

use std::fmt;
use std::io::ErrorKind;
use std::process::ExitCode;

/// `anyhow::ensure!` for a flag or argument the command cannot use (exit status 2).
macro_rules! ensure_usage {
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            return Err($crate::exit_code::usage(format!($($message)+)));
        }
    };
}

/// `anyhow::ensure!` for a file whose content the command cannot use (exit status 65).
macro_rules! ensure_data {
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            return Err($crate::exit_code::bad_data(format!($($message)+)));
        }
    };
}

/// The classes of failure, with their exit statuses (documented in `kiln --help` and the
/// README; 0 is success).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The command line is wrong: an unknown flag, a missing argument, a flag's value out
    /// of range.
    Usage = 2,
    /// A file or spec is malformed or asks for something impossible (including a model too
    /// large for the machine, and a run whose loss diverged).
    BadData = 65,
    /// An input file, folder or data set does not exist or cannot be read.
    MissingInput = 66,
    /// kiln itself failed (a panic): a bug to report.
    Internal = 70,
    /// An output file or folder cannot be created.
    CannotCreate = 73,
    /// Reading or writing failed part-way (a full disk, a device error, a closed socket).
    Io = 74,
}

impl Failure {
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The name `--json` error objects carry.
    pub fn name(self) -> &'static str {
        match self {
            Failure::Usage => "usage",
            Failure::BadData => "bad_data",
            Failure::MissingInput => "missing_input",
            Failure::Internal => "internal",
            Failure::CannotCreate => "cannot_create",
            Failure::Io => "io",
        }
    }

    pub fn exit(self) -> ExitCode {
        ExitCode::from(self.code())
    }
}

/// The text `kiln --help` ends with.
pub const HELP: &str = "\
Exit status:
  0   success
  2   usage: a flag or argument is wrong
  65  bad data: a file or spec is malformed or asks for the impossible (or the loss diverged)
  66  missing input: a file, folder or data set does not exist or cannot be read
  70  internal error: a bug in kiln; please report it
  73  cannot create output: a file or folder to write cannot be created
  74  I/O error: reading or writing failed part-way (a full disk, a device error)

Environment:
  KILN_DATA          folder holding mnist/ and shakespeare/ (after --data-dir and the spec's data_dir)
  KILN_OFFLINE       1: never download; say where to put missing data instead (same as --offline)
  KILN_MNIST_MIRROR  base URL to download the MNIST files from
  RAYON_NUM_THREADS  compute threads [default: one per core]
  SOURCE_DATE_EPOCH  the time saved model files record, for reproducible bytes";

/// An error the command line raises itself, tagged with its class.
#[derive(Debug)]
pub struct Tagged {
    pub failure: Failure,
    pub message: String,
}

impl fmt::Display for Tagged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Tagged {}

/// A flag or argument the command cannot use.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    tagged(Failure::Usage, message)
}

/// A file whose content the command cannot use.
pub fn bad_data(message: impl Into<String>) -> anyhow::Error {
    tagged(Failure::BadData, message)
}

/// An output that could not be created, known only from a message.
pub fn cannot_create(message: impl Into<String>) -> anyhow::Error {
    tagged(Failure::CannotCreate, message)
}

/// A failure that is kiln's fault, not the user's.
pub fn internal(message: impl Into<String>) -> anyhow::Error {
    tagged(Failure::Internal, message)
}

/// An output at `path` that could not be created or written.
pub fn output(path: &std::path::Path, cause: std::io::Error) -> anyhow::Error {
    kiln::Error::output(path, cause).into()
}

fn tagged(failure: Failure, message: impl Into<String>) -> anyhow::Error {
    Tagged {
        failure,
        message: message.into(),
    }
    .into()
}

/// The class of `err`: the first error in its chain that has one. An error nothing tags
/// is kiln's fault (a case the classification missed), so it counts as internal.
pub fn classify(err: &anyhow::Error) -> Failure {
    err.chain()
        .find_map(|cause| {
            if let Some(tagged) = cause.downcast_ref::<Tagged>() {
                Some(tagged.failure)
            } else if let Some(e) = cause.downcast_ref::<kiln::Error>() {
                Some(of_library(e))
            } else if let Some(e) = cause.downcast_ref::<kiln_serve::ServeError>() {
                Some(of_server(e))
            } else if let Some(e) = cause.downcast_ref::<std::io::Error>() {
                Some(reading(e.kind()))
            } else {
                // serde_json reports the writer's I/O errors (stdout on a full disk) too.
                cause
                    .downcast_ref::<serde_json::Error>()
                    .map(|e| match e.io_error_kind() {
                        Some(kind) => reading(kind),
                        None => Failure::BadData,
                    })
            }
        })
        .unwrap_or(Failure::Internal)
}

fn of_library(e: &kiln::Error) -> Failure {
    use kiln::Error as E;
    match e {
        E::Io { cause, .. } => reading(cause.kind()),
        E::Output { cause, .. } => writing(cause.kind()),
        E::DataUnavailable(_) => Failure::MissingInput,
        // A flag's value (`--top-p = 2`) is a usage error; a spec field's is bad data.
        E::InvalidSetting { field, .. } if field.starts_with("--") => Failure::Usage,
        E::Data { .. }
        | E::Spec { .. }
        | E::Diverged { .. }
        | E::InvalidSetting { .. }
        | E::ShapeMismatch { .. }
        | E::LabelOutOfRange { .. }
        | E::TokenOutOfRange { .. }
        | E::TooFew { .. }
        | E::MissingValue { .. }
        | E::Mismatch { .. }
        | E::Layer { .. }
        | E::TooLarge { .. }
        | E::Unsupported { .. }
        | E::Corrupt { .. }
        | E::Artifact { .. } => Failure::BadData,
    }
}

fn of_server(e: &kiln_serve::ServeError) -> Failure {
    use kiln_serve::ServeError as S;
    match e {
        S::Io(_, cause) => reading(cause.kind()),
        S::Config(_) => Failure::Usage,
        S::BadFile(_) => Failure::BadData,
        S::Internal(_) => Failure::Internal,
        S::Model(e) => of_library(e),
    }
}

/// A failed read: a file that is not there or not readable is a missing input; one that
/// is not what it claims (not UTF-8, cut short) is bad data; anything else an I/O error.
fn reading(kind: ErrorKind) -> Failure {
    match kind {
        ErrorKind::NotFound
        | ErrorKind::PermissionDenied
        | ErrorKind::IsADirectory
        | ErrorKind::NotADirectory => Failure::MissingInput,
        ErrorKind::InvalidData | ErrorKind::UnexpectedEof => Failure::BadData,
        _ => Failure::Io,
    }
}

/// A failed write: an output that cannot be created where it was asked for, or an I/O
/// error part-way (a full disk).
fn writing(kind: ErrorKind) -> Failure {
    match kind {
        ErrorKind::NotFound
        | ErrorKind::PermissionDenied
        | ErrorKind::AlreadyExists
        | ErrorKind::IsADirectory
        | ErrorKind::NotADirectory
        | ErrorKind::ReadOnlyFilesystem
        | ErrorKind::InvalidFilename
        | ErrorKind::InvalidInput => Failure::CannotCreate,
        _ => Failure::Io,
    }
}

/// Prints `err` on stderr, as one `error: …` line or, for a command asked for JSON, as one
/// JSON object, and gives its exit status.
pub fn report(err: &anyhow::Error, json: bool) -> ExitCode {
    let failure = classify(err);
    let message = match failure {
        Failure::Internal => format!("{err:#} (this is a bug in kiln; please report it)"),
        _ => format!("{err:#}"),
    };
    print_error(failure, &message, json);
    failure.exit()
}

/// One error on stderr: `error: MESSAGE`, or `{"error": {...}}` for a JSON command.
pub fn print_error(failure: Failure, message: &str, json: bool) {
    if json {
        let object = serde_json::json!({
            "error": { "code": failure.code(), "kind": failure.name(), "message": message }
        });
        eprintln!("{object}");
    } else {
        eprintln!("error: {message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_errors_map_to_their_classes() {
        let io = |kind| std::io::Error::from(kind);
        let class = |e: kiln::Error| classify(&e.into());
        assert_eq!(
            class(kiln::Error::io("x", io(ErrorKind::NotFound))),
            Failure::MissingInput
        );
        assert_eq!(
            class(kiln::Error::io("x", io(ErrorKind::InvalidData))),
            Failure::BadData
        );
        assert_eq!(
            class(kiln::Error::io("x", io(ErrorKind::Interrupted))),
            Failure::Io
        );
        assert_eq!(
            class(kiln::Error::output("x", io(ErrorKind::NotFound))),
            Failure::CannotCreate
        );
        assert_eq!(
            class(kiln::Error::output("x", io(ErrorKind::StorageFull))),
            Failure::Io
        );
        assert_eq!(class(kiln::Error::setting("--top-p", 2, "0..1")), Failure::Usage);
        assert_eq!(
            class(kiln::Error::setting("dropout", 2, "0..1")),
            Failure::BadData
        );
        assert_eq!(
            class(kiln::Error::DataUnavailable("mnist".into())),
            Failure::MissingInput
        );
    }

    #[test]
    fn context_keeps_the_class_and_untagged_errors_are_internal() {
        let err = anyhow::Error::from(kiln::Error::data("d.csv", "bad")).context("spec s.toml");
        assert_eq!(classify(&err), Failure::BadData);
        assert_eq!(classify(&usage("--x").context("kiln cv")), Failure::Usage);
        assert_eq!(classify(&anyhow::anyhow!("untagged")), Failure::Internal);
    }
}
