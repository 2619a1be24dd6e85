//! [`kiln::train::Collective`] over an MPI communicator.

use std::sync::Mutex;

use kiln::train::Collective;
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Threading;

/// This process's membership of `MPI_COMM_WORLD`. MPI is finalized when it is dropped.
pub struct MpiGroup {
    world: SimpleCommunicator,
    /// Send buffer for all-reduce (Open MPI reads and writes distinct buffers), reused.
    scratch: Mutex<Vec<f32>>,
    // Declared last: fields drop in order, and the communicator must go before MPI ends.
    _universe: Universe,
}

// SAFETY: kiln's training loop makes every collective call from one thread at a time
// (MPI_THREAD_SERIALIZED, which `init` requires), though not always from the thread that
// initialized MPI: it trains on a rayon worker.
unsafe impl Sync for MpiGroup {}

impl MpiGroup {
    /// Initializes MPI. Outside `mpirun` this is a group of one.
    pub fn init() -> Result<MpiGroup, String> {
        let (universe, threading) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or("MPI was already initialized in this process")?;
        if threading < Threading::Serialized {
            return Err(format!(
                "the MPI library offers thread support {threading:?}; kiln needs Serialized \
                 (calls from one thread at a time, not always the main one)"
            ));
        }
        Ok(MpiGroup {
            world: universe.world(),
            scratch: Mutex::new(Vec::new()),
            _universe: universe,
        })
    }

    /// The MPI library's own name and version (`MPI_Get_library_version`).
    pub fn library_version() -> String {
        mpi::environment::library_version().unwrap_or_else(|_| "unknown MPI".into())
    }

    /// This node's name, as MPI knows it.
    pub fn processor_name(&self) -> String {
        mpi::environment::processor_name().unwrap_or_else(|_| "unknown host".into())
    }

    /// Ends every rank of the job with `code` (`MPI_Abort`): what a rank does after an
    /// error, since the others would otherwise wait for it forever in the next collective.
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }

    /// Waits until every rank gets here.
    pub fn barrier(&self) {
        self.world.barrier();
    }
}

impl std::fmt::Debug for MpiGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MpiGroup(rank {} of {})", self.world.rank(), self.world.size())
    }
}

impl Collective for MpiGroup {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    fn all_reduce_sum(&self, values: &mut [f32]) {
        let mut send = self.scratch.lock().expect("no collective panicked");
        send.clear();
        send.extend_from_slice(values);
        self.world
            .all_reduce_into(&send[..], values, SystemOperation::sum());
    }

    fn all_reduce_sum_f64(&self, values: &mut [f64]) {
        let send = values.to_vec();
        self.world
            .all_reduce_into(&send[..], values, SystemOperation::sum());
    }

    fn broadcast(&self, values: &mut [f32]) {
        if values.is_empty() {
            return; // every rank agrees: nothing to send (Open MPI rejects an empty buffer)
        }
        self.world.process_at_rank(0).broadcast_into(values);
    }

    fn broadcast_bytes(&self, bytes: &mut Vec<u8>) {
        let root = self.world.process_at_rank(0);
        let mut len = bytes.len() as u64;
        root.broadcast_into(&mut len);
        bytes.resize(len as usize, 0);
        if len > 0 {
            root.broadcast_into(&mut bytes[..]);
        }
    }
}
