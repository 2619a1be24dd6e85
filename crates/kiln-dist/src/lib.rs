//! Data-parallel training for kiln over MPI, the engine HPC clusters and Horovod run on.
//!
//! `mpirun -np N kiln train SPEC --distributed` starts N processes; each builds a
//! [`MpiGroup`] over `MPI_COMM_WORLD` and hands it to kiln's training loop, which splits
//! every global batch across the ranks and sums their gradients with `MPI_Allreduce`
//! (see `kiln::train::distributed`). The library itself knows nothing of MPI.
//!
//! Without the `mpi` feature this crate holds only what needs no MPI library: the ring
//! all-reduce cost model used to read the measurements.

pub mod cost_model;

#[cfg(feature = "mpi")]
mod mpi_group;

#[cfg(feature = "mpi")]
pub use mpi_group::MpiGroup;
