//! `kiln train --distributed`: this process as one rank of an `mpirun` job.

use anyhow::Result;

use crate::commands::TrainArgs;

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
    match crate::commands::train_in(args, Some(&group), extra) {
        Ok(()) => Ok(()),
        Err(e) => {
            eprintln!(
                "error: rank {rank} of {size} on {}: {e:#}",
                group.processor_name()
            );
            // The other ranks wait for this one in their next all-reduce: end them all.
            group.abort(1)
        }
    }
}

#[cfg(not(feature = "distributed"))]
pub fn train(_args: &TrainArgs) -> Result<()> {
    anyhow::bail!(
        "--distributed: this kiln was built without MPI; build it with \
         `cargo build --release --features distributed` (needs Open MPI: \
         apt-get install libopenmpi-dev openmpi-bin libclang-dev) and start it under mpirun"
    )
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
