//! Data-parallel training: what `fit` needs from a group of processes that each hold a
//! full replica of the model, and the arithmetic of splitting work between them.
//!
//! The library knows nothing of MPI: `kiln-dist` implements [`Collective`] over an MPI
//! communicator, and [`InProcessGroup`] implements it over threads (for tests, and to see
//! data parallelism work without MPI). Semantics follow Horovod's, with one choice made
//! differently: the spec's batch size is the *global* batch, split across the ranks, so a
//! spec trains the same model on 1 or N processes (up to summation order) and its learning
//! rate needs no rescaling.

use std::sync::{Arc, Barrier, Mutex};
use std::time::Instant;

use crate::params::ParamStore;

/// A group of processes training one model together (an MPI communicator).
///
/// Every method is collective: all ranks call it, in the same order, with buffers of the
/// same length. Results are identical on every rank (MPI's built-in reductions guarantee
/// it for the algorithms Open MPI uses, and so does [`InProcessGroup`]).
pub trait Collective: Sync + std::fmt::Debug {
    /// This process's index in the group, 0-based; rank 0 prints, logs and saves.
    fn rank(&self) -> usize;
    /// Number of processes in the group.
    fn size(&self) -> usize;
    /// Replaces `values` on every rank with their element-wise sum over all ranks.
    fn all_reduce_sum(&self, values: &mut [f32]);
    /// [`Collective::all_reduce_sum`] in double precision (epoch totals, validation sums).
    fn all_reduce_sum_f64(&self, values: &mut [f64]);
    /// Replaces `values` on every rank with rank 0's.
    fn broadcast(&self, values: &mut [f32]);
    /// Replaces `bytes` on every rank with rank 0's (whose length the others need not know).
    fn broadcast_bytes(&self, bytes: &mut Vec<u8>);
}

/// Gradients are reduced in buckets of at most this many values (16 MiB), so the fused
/// buffer's size per collective call stays bounded for large models (Horovod's tensor
/// fusion threshold is 64 MiB); the reference MLP's 407,050 gradients fit in one.
pub const BUCKET_VALUES: usize = 1 << 22;

/// The contiguous part of `items` that `rank` of `ranks` works on: sizes differ by at most
/// one, and the parts cover `items` in order.
pub fn shard<T>(items: &[T], rank: usize, ranks: usize) -> &[T] {
    let (start, end) = shard_bounds(items.len(), rank, ranks);
    &items[start..end]
}

/// Start and end of [`shard`]'s part of `len` items.
pub fn shard_bounds(len: usize, rank: usize, ranks: usize) -> (usize, usize) {
    assert!(rank < ranks, "rank {rank} of a group of {ranks}");
    (len * rank / ranks, len * (rank + 1) / ranks)
}

/// Sums `values` over the group in buckets of at most [`BUCKET_VALUES`], adding the time
/// it took to `seconds` (to report the all-reduce share of training).
pub(crate) fn all_reduce_timed(group: &dyn Collective, values: &mut [f32], seconds: &mut f64) {
    let start = Instant::now();
    for bucket in values.chunks_mut(BUCKET_VALUES) {
        group.all_reduce_sum(bucket);
    }
    *seconds += start.elapsed().as_secs_f64();
}

/// Packs what one training step must agree on into `buffer`: the loss sum and correct
/// count of this rank's samples, every trainable gradient weighted by this rank's share
/// of the global batch (so the sum over ranks is the gradient of the global batch's mean
/// loss), and every non-trainable value (batch normalization's moving statistics, which
/// each rank updated from its own samples) divided by the number of ranks (so the sum is
/// their mean).
pub(crate) fn pack_step(
    buffer: &mut Vec<f32>,
    params: &ParamStore,
    loss_sum: f32,
    correct: usize,
    batch_share: f32,
    ranks: usize,
) {
    buffer.clear();
    buffer.push(loss_sum);
    buffer.push(correct as f32);
    // Frozen weights are the same on every rank and need nothing exchanged.
    for p in params.iter().filter(|p| !p.frozen) {
        match p.trainable {
            true => buffer.extend(p.grad.iter().map(|g| g * batch_share)),
            false => buffer.extend(p.value.data().iter().map(|v| v / ranks as f32)),
        }
    }
}

/// Writes a reduced [`pack_step`] buffer back; returns the global loss sum and correct count.
pub(crate) fn unpack_step(buffer: &[f32], params: &mut ParamStore) -> (f32, usize) {
    let mut offset = 2;
    for p in params.iter_mut().filter(|p| !p.frozen) {
        let n = p.value.numel();
        let values = &buffer[offset..offset + n];
        match p.trainable {
            true => p.grad.copy_from_slice(values),
            false => p.value.data_mut().copy_from_slice(values),
        }
        offset += n;
    }
    (buffer[0], buffer[1].round() as usize)
}

/// Makes every rank's parameters rank 0's (the initial weights, or a resumed checkpoint's).
pub(crate) fn broadcast_parameters(group: &dyn Collective, params: &mut ParamStore) {
    for p in params.iter_mut() {
        group.broadcast(p.value.data_mut());
    }
}

/// Threads in one process acting as the ranks of a group. Each rank's [`InProcessGroup`]
/// is used from its own thread; every collective waits for all of them. Sums run in rank
/// order, so every rank gets bit-identical results.
#[derive(Debug)]
pub struct InProcessGroup {
    rank: usize,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    size: usize,
    barrier: Barrier,
    /// Each rank's contribution to the collective in progress.
    slots: Mutex<Vec<Vec<f64>>>,
}

impl InProcessGroup {
    /// One handle per rank, to be moved to the ranks' threads.
    pub fn new(size: usize) -> Vec<InProcessGroup> {
        assert!(size > 0, "a group needs at least one rank");
        let shared = Arc::new(Shared {
            size,
            barrier: Barrier::new(size),
            slots: Mutex::new(vec![Vec::new(); size]),
        });
        (0..size)
            .map(|rank| InProcessGroup {
                rank,
                shared: shared.clone(),
            })
            .collect()
    }

    /// Every rank deposits `mine`, then reads all deposits in rank order.
    fn exchange<R>(&self, mine: Vec<f64>, read: impl FnOnce(&[Vec<f64>]) -> R) -> R {
        self.shared.slots.lock().expect("no rank panicked")[self.rank] = mine;
        self.shared.barrier.wait();
        let result = read(&self.shared.slots.lock().expect("no rank panicked"));
        // Nobody may deposit the next collective's values until everyone has read these.
        self.shared.barrier.wait();
        result
    }

    fn reduce(&self, values: Vec<f64>) -> Vec<f64> {
        self.exchange(values, |slots| {
            let mut sum = vec![0.0; slots[0].len()];
            for slot in slots {
                assert_eq!(
                    slot.len(),
                    sum.len(),
                    "ranks reduced buffers of different lengths"
                );
                sum.iter_mut().zip(slot).for_each(|(s, v)| *s += v);
            }
            sum
        })
    }
}

impl Collective for InProcessGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.shared.size
    }

    fn all_reduce_sum(&self, values: &mut [f32]) {
        // Each value is summed in f32 in rank order, as an MPI reduction of f32 would be.
        let mine = values.iter().map(|&v| v as f64).collect();
        let sums = self.exchange(mine, |slots| {
            (0..values.len())
                .map(|i| slots.iter().fold(0.0f32, |s, slot| s + slot[i] as f32))
                .collect::<Vec<f32>>()
        });
        values.copy_from_slice(&sums);
    }

    fn all_reduce_sum_f64(&self, values: &mut [f64]) {
        let sums = self.reduce(values.to_vec());
        values.copy_from_slice(&sums);
    }

    fn broadcast(&self, values: &mut [f32]) {
        let mine = values.iter().map(|&v| v as f64).collect();
        let root = self.exchange(mine, |slots| slots[0].clone());
        values.iter_mut().zip(root).for_each(|(v, r)| *v = r as f32);
    }

    fn broadcast_bytes(&self, bytes: &mut Vec<u8>) {
        let mine = bytes.iter().map(|&b| b as f64).collect();
        *bytes = self.exchange(mine, |slots| slots[0].iter().map(|&b| b as u8).collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_batch_in_order_with_sizes_within_one() {
        let items: Vec<usize> = (0..10).collect();
        let parts: Vec<&[usize]> = (0..3).map(|r| shard(&items, r, 3)).collect();
        assert_eq!(parts, [&[0, 1, 2][..], &[3, 4, 5], &[6, 7, 8, 9]]);
        assert_eq!(shard(&items[..1], 0, 2), &[] as &[usize]);
        assert_eq!(shard(&items[..1], 1, 2), &[0]);
        assert_eq!(shard(&items, 0, 1), &items[..]);
    }

    #[test]
    fn in_process_group_sums_and_broadcasts_identically_on_every_rank() {
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = InProcessGroup::new(3)
                .into_iter()
                .map(|g| {
                    s.spawn(move || {
                        let r = g.rank() as f32;
                        let mut sum = [r, 10.0 * r];
                        g.all_reduce_sum(&mut sum);
                        let mut wide = [r as f64 * 0.5];
                        g.all_reduce_sum_f64(&mut wide);
                        let mut root = [r + 7.0];
                        g.broadcast(&mut root);
                        let mut text = vec![b'a' + g.rank() as u8; g.rank() + 1];
                        g.broadcast_bytes(&mut text);
                        (sum, wide, root, text)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (sum, wide, root, text) in results {
            assert_eq!(sum, [3.0, 30.0]);
            assert_eq!(wide, [1.5]);
            assert_eq!(root, [7.0]);
            assert_eq!(text, b"a");
        }
    }
}
