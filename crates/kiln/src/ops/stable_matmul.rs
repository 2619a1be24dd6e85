//! The inference product `y(m×n) = x(m×k) · w(k×n)` whose rows do not depend on their batch.
//!
//! Every output element is one fused multiply-add chain over k in order, starting from
//! zero: `acc = fma(x[i,p], w[p,j], acc)` for p = 0, 1, …, k−1. Tiling, threading and the
//! instruction set change only which elements are computed together, never the chain, so
//! a sample's outputs have the same bits whether it is predicted alone, in a batch of 1024,
//! or in whatever batch `kiln serve` gathers around it. The `gemm` crate cannot promise
//! this: it splits k into cache blocks whose size depends on the row count, and its m = 1
//! path sums in a different order from its m > 1 path.
//!
//! It is also the fast path for small batches: one sample through a 784×512 weight streams
//! 1.6 MB, which one core reads from L3 at ~17 µs; split by columns, each core reads half,
//! from its own L2 once warm.
//!
//! Only the forward product: training (which needs no batch invariance) keeps `gemm`.

use rayon::prelude::*;

/// Below this many multiply-adds the product stays on the calling thread. A 784×512
/// matrix-vector product (0.4M) ran in 8 µs on two threads against 17 µs on one; the
/// 512×10 output layer (5K) is over before another thread could wake.
const PARALLEL_MIN_WORK: usize = 1 << 16;

/// Rows per task (at most, beyond one task per thread) when rows are split across the
/// pool: enough 6-row tiles to amortize streaming each panel of `w` from L2.
const ROWS_PER_TASK: usize = 96;

/// Below this many rows the product splits by columns instead (each thread reads its own
/// part of `w`, which is what costs at batch 1).
const MIN_ROWS_FOR_ROW_SPLIT: usize = 12;

/// Columns per task when splitting by columns.
const COLUMNS_PER_TASK: usize = 256;

/// `y = x · w`, each element the in-order FMA chain described in the module docs. `x` is
/// m×k and `w` k×n, both row-major; `y` is m×n.
pub fn stable_gemm(m: usize, n: usize, k: usize, x: &[f32], w: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), m * k, "stable_gemm: x is not {m}×{k}");
    assert_eq!(w.len(), k * n, "stable_gemm: w is not {k}×{n}");
    assert_eq!(y.len(), m * n, "stable_gemm: y is not {m}×{n}");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        y.fill(0.0); // an empty sum
        return;
    }
    let parallel = m * n * k >= PARALLEL_MIN_WORK && rayon::current_num_threads() > 1;
    // Off the pool (`kiln serve`'s compute threads), a few rows would wait for a sleeping
    // worker to wake: one request at a time, serving answered 5.6K req/s with the split
    // and 7.3K without.
    let splits_cheaply = m >= MIN_ROWS_FOR_ROW_SPLIT || rayon::current_thread_index().is_some();
    if !parallel || !splits_cheaply {
        block(k, n, x, w, y, 0..n);
    } else if m >= MIN_ROWS_FOR_ROW_SPLIT {
        // Equal shares in whole 6-row tiles, so no thread waits on a longer one.
        let threads = rayon::current_num_threads();
        let tasks = m.div_ceil(ROWS_PER_TASK).next_multiple_of(threads);
        let rows = m.div_ceil(tasks).next_multiple_of(6);
        y.par_chunks_mut(rows * n)
            .zip(x.par_chunks(rows * k))
            .for_each(|(y, x)| block(k, n, x, w, y, 0..n));
    } else {
        // Each task owns a band of columns in every row; `y` is split by raw pointer
        // because those bands are not contiguous.
        let out = SharedOut(y.as_mut_ptr());
        let bands = n.div_ceil(COLUMNS_PER_TASK);
        (0..bands).into_par_iter().for_each(|band| {
            let columns = band * COLUMNS_PER_TASK..((band + 1) * COLUMNS_PER_TASK).min(n);
            // SAFETY: bands are disjoint column ranges, so no two tasks write the same
            // element, and `y` outlives the parallel loop.
            let y = unsafe { std::slice::from_raw_parts_mut(out.get(), m * n) };
            block(k, n, x, w, y, columns);
        });
    }
}

#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: used only to hand disjoint column bands of one buffer to parallel tasks.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Columns `columns` of `y = x · w` for the rows of `x` (rows = x.len() / k) on this thread.
fn block(k: usize, n: usize, x: &[f32], w: &[f32], y: &mut [f32], columns: std::ops::Range<usize>) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F; `block_avx512` checks its own bounds.
            return unsafe { avx512::block(k, n, x, w, y, columns) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { block_avx2(k, n, x, w, y, columns) };
        }
    }
    block_portable(k, n, x, w, y, columns)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2(
    k: usize,
    n: usize,
    x: &[f32],
    w: &[f32],
    y: &mut [f32],
    columns: std::ops::Range<usize>,
) {
    block_portable(k, n, x, w, y, columns)
}

/// Tiles of 4 rows × 16 columns written so the compiler keeps the accumulators in vector
/// registers; `mul_add` is the same correctly rounded FMA the AVX-512 kernel uses.
#[inline(always)]
fn block_portable(k: usize, n: usize, x: &[f32], w: &[f32], y: &mut [f32], columns: std::ops::Range<usize>) {
    const ROWS: usize = 4;
    const COLS: usize = 16;
    let m = x.len() / k;
    let mut c0 = columns.start;
    while c0 < columns.end {
        let width = COLS.min(columns.end - c0);
        let mut r0 = 0;
        while r0 < m {
            let rows = ROWS.min(m - r0);
            let mut acc = [[0.0f32; COLS]; ROWS];
            for p in 0..k {
                let w_row = &w[p * n + c0..p * n + c0 + width];
                for (r, acc_row) in acc.iter_mut().enumerate().take(rows) {
                    let a = x[(r0 + r) * k + p];
                    for (acc, &b) in acc_row.iter_mut().zip(w_row) {
                        *acc = a.mul_add(b, *acc);
                    }
                }
            }
            for (r, acc_row) in acc.iter().enumerate().take(rows) {
                let at = (r0 + r) * n + c0;
                y[at..at + width].copy_from_slice(&acc_row[..width]);
            }
            r0 += rows;
        }
        c0 += width;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// Rows per register tile: 6 rows × 4 vectors is 24 of the 32 zmm registers.
    const TILE_ROWS: usize = 6;
    const LANES: usize = 16;
    /// Depth of a k block: a 512×64 panel of `w` is 128 KB, an eighth of a core's L2.
    const KC: usize = 512;

    /// The operands of one thread's share: `y(m×n) = x(m×k) · w(k×n)`, row-major, and the
    /// k range this pass covers.
    struct Pass<'a> {
        k: usize,
        n: usize,
        x: &'a [f32],
        w: &'a [f32],
        y: *mut f32,
        depth: Range<usize>,
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn block(k: usize, n: usize, x: &[f32], w: &[f32], y: &mut [f32], columns: Range<usize>) {
        let m = x.len() / k;
        assert!(x.len() == m * k && y.len() >= m * n && w.len() >= k * n && columns.end <= n);
        let full_tiles = m / TILE_ROWS;
        let leftover_start = full_tiles * TILE_ROWS;
        // k in blocks so a 64-column panel of `w` (KC×64 floats) stays in L2 while every
        // row tile passes over it; the partial sums wait in `y` between blocks.
        for k0 in (0..k).step_by(KC) {
            let pass = Pass {
                k,
                n,
                x,
                w,
                y: y.as_mut_ptr(),
                depth: k0..(k0 + KC).min(k),
            };
            for c0 in columns.clone().step_by(64).take_while(|_| full_tiles > 0) {
                let width = 64.min(columns.end - c0);
                for t in 0..full_tiles {
                    pass.tile_of_width::<TILE_ROWS>(t * TILE_ROWS, c0, width);
                }
            }
            let r0 = leftover_start;
            match m - leftover_start {
                0 => {}
                1 => pass.single_row(r0, columns.clone()),
                2 => pass.panels::<2>(r0, columns.clone()),
                3 => pass.panels::<3>(r0, columns.clone()),
                4 => pass.panels::<4>(r0, columns.clone()),
                _ => pass.panels::<5>(r0, columns.clone()),
            }
        }
    }

    impl Pass<'_> {
        /// Rows r0..r0+R across `columns` in 64-column panels.
        #[inline(always)]
        unsafe fn panels<const R: usize>(&self, r0: usize, columns: Range<usize>) {
            for c0 in columns.clone().step_by(64) {
                self.tile_of_width::<R>(r0, c0, 64.min(columns.end - c0));
            }
        }

        /// One row: 256 columns per pass (16 independent chains hide the FMA latency),
        /// then 64-column panels.
        #[inline(always)]
        unsafe fn single_row(&self, r0: usize, columns: Range<usize>) {
            let mut c0 = columns.start;
            while columns.end - c0 >= 256 {
                self.tile::<1, 16>(r0, c0, 256);
                c0 += 256;
            }
            self.panels::<1>(r0, c0..columns.end);
        }

        /// A tile of `R` rows × `width` (≤ 64) columns with as few vectors as cover it.
        #[inline(always)]
        unsafe fn tile_of_width<const R: usize>(&self, r0: usize, c0: usize, width: usize) {
            match width.div_ceil(LANES) {
                4 => self.tile::<R, 4>(r0, c0, width),
                3 => self.tile::<R, 3>(r0, c0, width),
                2 => self.tile::<R, 2>(r0, c0, width),
                _ => self.tile::<R, 1>(r0, c0, width),
            }
        }

        /// Rows r0..r0+R, columns c0..c0+width of y, `V` vectors wide, over this pass's k
        /// range: the chains start from zero at k = 0 and otherwise resume from the partial
        /// sums stored in `y`. The last vector is masked when `width` is not a multiple of
        /// 16; masked lanes are neither loaded nor stored, so nothing past a row's end is
        /// read.
        #[inline(always)]
        unsafe fn tile<const R: usize, const V: usize>(&self, r0: usize, c0: usize, width: usize) {
            let (k, n) = (self.k, self.n);
            debug_assert!(width <= V * LANES && width > (V - 1) * LANES);
            let tail = width - (V - 1) * LANES;
            let last_mask: __mmask16 = if tail == LANES { 0xFFFF } else { (1u16 << tail) - 1 };
            let mask = |v: usize| if v + 1 < V { 0xFFFF } else { last_mask };
            let yp = self.y.add(r0 * n + c0);
            let mut acc = [[_mm512_setzero_ps(); V]; R];
            if self.depth.start > 0 {
                for (r, acc_row) in acc.iter_mut().enumerate() {
                    for (v, acc) in acc_row.iter_mut().enumerate() {
                        *acc = _mm512_maskz_loadu_ps(mask(v), yp.add(r * n + v * LANES));
                    }
                }
            }
            let xp = self.x.as_ptr().add(r0 * k);
            let mut wp = self.w.as_ptr().add(self.depth.start * n + c0);
            for p in self.depth.clone() {
                let mut b = [_mm512_setzero_ps(); V];
                for (v, b) in b.iter_mut().enumerate() {
                    *b = _mm512_maskz_loadu_ps(mask(v), wp.add(v * LANES));
                }
                for (r, acc_row) in acc.iter_mut().enumerate() {
                    let a = _mm512_set1_ps(*xp.add(r * k + p));
                    for (acc, &b) in acc_row.iter_mut().zip(&b) {
                        *acc = _mm512_fmadd_ps(a, b, *acc);
                    }
                }
                wp = wp.add(n);
            }
            for (r, acc_row) in acc.iter().enumerate() {
                for (v, &value) in acc_row.iter().enumerate() {
                    _mm512_mask_storeu_ps(yp.add(r * n + v * LANES), mask(v), value);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::matmul::{gemm, MatRef};
    use crate::rng::Rng;

    fn random(len: usize, rng: &mut Rng) -> Vec<f32> {
        (0..len).map(|_| rng.uniform(-1.0, 1.0)).collect()
    }

    /// The FMA chain written out, one element at a time.
    fn reference(m: usize, n: usize, k: usize, x: &[f32], w: &[f32]) -> Vec<f32> {
        let mut y = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                y[i * n + j] = (0..k).fold(0.0f32, |acc, p| x[i * k + p].mul_add(w[p * n + j], acc));
            }
        }
        y
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn every_shape_and_path_computes_the_in_order_chain() {
        let mut rng = Rng::new(3);
        // Row counts around the 6-row tile and the row-split threshold, column counts
        // around the 16-lane vector, 64-column panel and 256-column band.
        for &(m, n, k) in &[
            (3, 5, 0),
            (1, 1, 1),
            (1, 10, 512),
            (1, 300, 70),
            (5, 17, 9),
            (6, 64, 33),
            (7, 65, 20),
            (13, 129, 40),
            (50, 257, 31),
            (64, 512, 784),
        ] {
            let (x, w) = (random(m * k, &mut rng), random(k * n, &mut rng));
            let want = bits(&reference(m, n, k, &x, &w));
            let mut y = vec![f32::NAN; m * n];
            stable_gemm(m, n, k, &x, &w, &mut y);
            assert_eq!(bits(&y), want, "{m}×{k}·{k}×{n}");
            if k == 0 {
                continue; // handled before any kernel runs
            }
            let mut portable = vec![f32::NAN; m * n];
            block_portable(k, n, &x, &w, &mut portable, 0..n);
            assert_eq!(bits(&portable), want, "portable {m}×{k}·{k}×{n}");
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                let mut avx2 = vec![f32::NAN; m * n];
                // SAFETY: the CPU has AVX2 and FMA.
                unsafe { block_avx2(k, n, &x, &w, &mut avx2, 0..n) };
                assert_eq!(bits(&avx2), want, "AVX2 {m}×{k}·{k}×{n}");
            }
        }
    }

    #[test]
    fn a_row_has_the_same_bits_alone_and_in_any_batch() {
        let mut rng = Rng::new(5);
        let (k, n) = (784, 512);
        let w = random(k * n, &mut rng);
        let x = random(1024 * k, &mut rng);
        let mut batch = vec![0.0; 1024 * n];
        stable_gemm(1024, n, k, &x, &w, &mut batch);
        for (rows, start) in [(1, 0), (1, 1023), (7, 100), (64, 960)] {
            let mut part = vec![0.0; rows * n];
            stable_gemm(rows, n, k, &x[start * k..(start + rows) * k], &w, &mut part);
            assert_eq!(
                bits(&part),
                bits(&batch[start * n..(start + rows) * n]),
                "{rows} rows at {start}"
            );
        }
    }

    #[test]
    fn agrees_with_gemm_to_rounding() {
        let mut rng = Rng::new(7);
        let (m, n, k) = (33, 70, 300);
        let (x, w) = (random(m * k, &mut rng), random(k * n, &mut rng));
        let mut want = vec![0.0; m * n];
        gemm(
            m,
            n,
            k,
            &mut want,
            false,
            MatRef::row_major(&x, k),
            MatRef::row_major(&w, n),
        );
        let mut y = vec![0.0; m * n];
        stable_gemm(m, n, k, &x, &w, &mut y);
        for (a, b) in y.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }
}
