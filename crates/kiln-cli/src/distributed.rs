//! `kiln train --distributed`: this process as one rank of an `mpirun` job.

use anyhow::Result;

use crate::train_command::TrainArgs;

#[cfg(feature = "distributed")]
pub fn train(args: &TrainArgs) -> Result<()> {
    use kiln::train::Collective;
    use kiln_dist::MpiGroup;

    let group = MpiGroup::init().map_err(anyhow::Error::msg)?;
    share_cores_with_local_ranks();
    let (rank, size) = (group.rank(), group.size());
    if rank == 0 && !args.quiet {
        let library = MpiGroup::library_version();
        let library = library.lines().next().unwrap_or("").trim();
        println!(
            "distributed: {size} ranks, {} threads each ({library})",
            rayon::current_num_threads()
        );
    }
    let extra = fault_injection::from_env(rank);
    match crate::train_command::train_in(args, Some(&group), extra) {
        Ok(()) => Ok(()),
        Err(e) => {
            eprintln!(
                "error: rank {rank} of {size} on {}: {e:#}",
                group.processor_name()
            );
            // The other ranks wait for this one in their next all-reduce: end them all,
            // with this error's exit status (mpirun passes it on).
            group.abort(i32::from(crate::exit_code::classify(&e).code()))
        }
    }
}

#[cfg(not(feature = "distributed"))]
pub fn train(_args: &TrainArgs) -> Result<()> {
    Err(crate::exit_code::usage(
        "--distributed: this kiln was built without MPI; build it with \
         `cargo build --release --features distributed` (needs Open MPI: \
         apt-get install libopenmpi-dev openmpi-bin libclang-dev) and start it under mpirun",
    ))
}

/// Called on every rank once the run folder is known: rank 0 arranges to say, if mpirun
/// ends it because another rank failed, where the run's checkpoint is and how to resume.
#[cfg(feature = "distributed")]
pub fn on_run_dir(group: &dyn kiln::train::Collective, run_dir: &std::path::Path, checkpoints: bool) {
    if group.rank() != 0 {
        return;
    }
    let resume = match checkpoints {
        true => format!(
            "every finished epoch is in its checkpoint: continue with `mpirun -np N kiln train --resume {} --distributed`",
            run_dir.display()
        ),
        false => "checkpoints were off (--no-checkpoint): the run cannot be resumed".into(),
    };
    last_words::install(format!(
        "kiln: rank 0 was stopped by mpirun, which ends every rank when one fails (mpirun names it); {resume}\n"
    ));
}

#[cfg(not(feature = "distributed"))]
pub fn on_run_dir(_: &dyn kiln::train::Collective, _: &std::path::Path, _: bool) {}

/// A message written to stderr when SIGTERM arrives, before exiting with 143 (128 + 15).
#[cfg(feature = "distributed")]
mod last_words {
    use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

    static MESSAGE: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
    static LENGTH: AtomicUsize = AtomicUsize::new(0);

    pub fn install(message: String) {
        // Leaked on purpose: the handler may run at any moment until the process ends.
        let bytes: &'static mut [u8] = Box::leak(message.into_bytes().into_boxed_slice());
        LENGTH.store(bytes.len(), Ordering::SeqCst);
        MESSAGE.store(bytes.as_mut_ptr(), Ordering::SeqCst);
        // SAFETY: the handler only calls async-signal-safe functions (write, _exit).
        unsafe {
            libc::signal(libc::SIGTERM, on_sigterm as *const () as libc::sighandler_t);
        }
    }

    extern "C" fn on_sigterm(_signal: libc::c_int) {
        let message = MESSAGE.load(Ordering::SeqCst);
        // SAFETY: `message` points at LENGTH leaked bytes (or is null); write and _exit are
        // async-signal-safe.
        unsafe {
            if !message.is_null() {
                libc::write(2, message.cast(), LENGTH.load(Ordering::SeqCst));
            }
            libc::_exit(143);
        }
    }
}

/// Gives each rank on this machine an equal share of its cores (unless RAYON_NUM_THREADS
/// says otherwise), so N ranks on one machine do not run N × cores threads.
#[cfg(feature = "distributed")]
fn share_cores_with_local_ranks() {
    if std::env::var_os("RAYON_NUM_THREADS").is_some() {
        return;
    }
    // Open MPI and MPICH (Hydra) both say how many ranks share this node.
    let local_ranks = ["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Fails only if the pool was already built, which leaves the default: harmless.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads((cores / local_ranks).max(1))
        .build_global();
}

/// A test hook: `KILN_FAULT_KILL=RANK:EPOCH:STEP` makes that rank kill itself (SIGKILL, as
/// the OOM killer or a lost node would) after that step, to test how the others end.
#[cfg(feature = "distributed")]
mod fault_injection {
    use kiln::train::{BatchProgress, Callback};

    pub fn from_env(rank: usize) -> Vec<Box<dyn Callback>> {
        let Ok(spec) = std::env::var("KILN_FAULT_KILL") else {
            return Vec::new();
        };
        let parts: Vec<usize> = spec.split(':').filter_map(|p| p.parse().ok()).collect();
        match parts[..] {
            [r, epoch, step] if r == rank => vec![Box::new(KillAt {
                epoch,
                step,
                current: 0,
            })],
            _ => Vec::new(),
        }
    }

    struct KillAt {
        epoch: usize,
        step: usize,
        current: usize,
    }

    impl Callback for KillAt {
        fn on_epoch_begin(&mut self, epoch: usize, _epochs: usize, _steps: usize) {
            self.current = epoch;
        }

        fn on_batch_end(&mut self, progress: &BatchProgress) {
            if self.current == self.epoch && progress.step == self.step {
                // SAFETY: raising a signal in our own process has no preconditions.
                unsafe {
                    libc::raise(libc::SIGKILL);
                }
            }
        }
    }
}
