//! Matrix product `y(m×n) = a(m×k) · b(k×n)` through the `gemm` crate's tuned kernels.
//!
//! `a` may have more than two dimensions: its leading ones are flattened into rows, so a
//! Dense layer applies to the last axis as in Keras. `b` is a matrix (a weight).

use rayon::prelude::*;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicUsize};

use crate::autograd::{Op, Tape, Var};
use crate::error::{Error, Result};
use crate::tensor::Shape;

/// A read-only matrix view: element (r, c) is at `r * row_stride + c * col_stride`.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    pub fn row_major(data: &'a [f32], cols: usize) -> Self {
        MatRef {
            data,
            row_stride: cols,
            col_stride: 1,
        }
    }

    fn covers(&self, rows: usize, cols: usize) -> bool {
        rows == 0
            || cols == 0
            || (rows - 1) * self.row_stride + (cols - 1) * self.col_stride < self.data.len()
    }
}

/// Number of `gemm` calls running now, counted only while [`COUNT_GEMM_CALLS`] is set. The
/// `gemm` crate allocates its packing buffers on every call; the allocation audit test
/// uses this to tell those apart from kiln's own allocations (which must be none in a
/// training step after the first).
pub static GEMM_CALLS_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Set by the allocation audit to have [`GEMM_CALLS_IN_FLIGHT`] kept. Off otherwise: a
/// CNN step makes thousands of small products on both threads, and their increments of
/// one shared counter bounced its cache line between the cores (2% of an epoch).
pub static COUNT_GEMM_CALLS: AtomicBool = AtomicBool::new(false);

/// Below this many multiply-adds one thread is faster than waking the pool: a product of
/// 2M multiply-adds takes ~10 µs on one core, about what a wake-up and join cost. (A
/// single-sample Dense 784→512, 0.4M, was 1.6× slower split across two threads.)
const PARALLEL_MIN_WORK: usize = 1 << 21;

/// `dst(m×n, row-major) = [dst +] lhs(m×k) · rhs(k×n)`, split across the pool when the
/// product is large enough to pay for it.
pub fn gemm(m: usize, n: usize, k: usize, dst: &mut [f32], accumulate: bool, lhs: MatRef, rhs: MatRef) {
    let parallel = m * n * k >= PARALLEL_MIN_WORK && rayon::current_num_threads() > 1;
    gemm_with(parallel, m, n, k, dst, accumulate, lhs, rhs);
}

/// [`gemm`] on the calling thread only: for callers that already split work across the
/// pool (one product per block of images).
pub fn gemm_single_thread(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    accumulate: bool,
    lhs: MatRef,
    rhs: MatRef,
) {
    gemm_with(false, m, n, k, dst, accumulate, lhs, rhs);
}

#[allow(clippy::too_many_arguments)] // the BLAS argument list, kept flat on purpose
fn gemm_with(
    parallel: bool,
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    accumulate: bool,
    lhs: MatRef,
    rhs: MatRef,
) {
    assert_eq!(dst.len(), m * n, "gemm destination is not {m}×{n}");
    assert!(lhs.covers(m, k) && rhs.covers(k, n), "gemm operand too small");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    let parallelism = if parallel {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    let counted = COUNT_GEMM_CALLS.load(Relaxed);
    if counted {
        GEMM_CALLS_IN_FLIGHT.fetch_add(1, SeqCst);
    }
    // SAFETY: the asserts above guarantee every element the kernel touches lies inside the
    // slices (strides are non-negative and the largest offsets are in bounds), and `dst`
    // is exclusively borrowed, so it aliases neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
    if counted {
        GEMM_CALLS_IN_FLIGHT.fetch_sub(1, SeqCst);
    }
}

/// Writes the transpose of `src` (rows×cols, row-major) into `dst` (cols×rows).
///
/// In 8×8 tiles: with a power-of-two row length (a 9216×128 weight, say) the lines a larger
/// tile touches all fall in the same few L1 sets and evict one another, which made a
/// 32×32-tiled transpose of that weight take 9 ms. Large matrices split across the pool
/// by bands of destination rows.
pub fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    assert!(src.len() == rows * cols && dst.len() == rows * cols);
    const TILE: usize = 8;
    let band = |c0: usize, out: &mut [f32]| {
        let band_cols = out.len() / rows.max(1);
        for r0 in (0..rows).step_by(TILE) {
            let r1 = (r0 + TILE).min(rows);
            for dc in 0..band_cols {
                let c = c0 + dc;
                let line = &mut out[dc * rows + r0..dc * rows + r1];
                for (k, d) in line.iter_mut().enumerate() {
                    *d = src[(r0 + k) * cols + c];
                }
            }
        }
    };
    if rows * cols < super::parallel::PAR_THRESHOLD || rows == 0 {
        band(0, dst);
    } else {
        dst.par_chunks_mut(TILE * rows)
            .enumerate()
            .for_each(|(i, out)| band(i * TILE, out));
    }
}

impl Tape<'_> {
    /// `a(…, k) · b(k, n) → (…, n)`. On an inference tape through
    /// [`stable_gemm`](super::stable_matmul::stable_gemm), so a row's outputs do not
    /// depend on the other rows of its batch (what `kiln serve`'s batching relies on).
    pub fn matmul(&mut self, a: Var, b: Var) -> Result<Var> {
        let (sa, sb) = (self.shape(a), self.shape(b));
        if sb.rank() != 2 || sa.rank() == 0 || sa.last() != sb.dims()[0] {
            return Err(Error::shape(
                "matmul",
                "equal inner sizes",
                format!("{sa} by {sb}"),
            ));
        }
        let (m, k, n) = (sa.rows(), sa.last(), sb.dims()[1]);
        let mut out_dims = sa;
        out_dims = replace_last(out_dims, n);
        let mut y = self.alloc(m * n);
        if self.grad_enabled() {
            let (a, b) = (
                MatRef::row_major(self.value(a), k),
                MatRef::row_major(self.value(b), n),
            );
            gemm(m, n, k, &mut y, false, a, b);
        } else {
            super::stable_matmul::stable_gemm(m, n, k, self.value(a), self.value(b), &mut y);
        }
        Ok(self.push_op(out_dims, y, Op::MatMul { a, b }, &[a, b]))
    }
}

impl Tape<'_> {
    /// `x(…, k) · kernel(k, n) + bias(n)`: a Linear layer in one op, the bias written
    /// first and the product accumulated onto it, which saves a pass over the output.
    ///
    /// Not for layers whose rows must not depend on their batch (Dense, which `kiln serve`
    /// batches): how gemm adds the product onto existing values varies with the row count,
    /// so a row's last bits can too. `matmul` then `add_bias` keeps rows independent.
    pub fn linear(&mut self, x: Var, kernel: Var, bias: Var) -> Result<Var> {
        let (sx, sk, sb) = (self.shape(x), self.shape(kernel), self.shape(bias));
        if sk.rank() != 2 || sx.rank() == 0 || sx.last() != sk.dims()[0] {
            return Err(Error::shape(
                "linear",
                "equal inner sizes",
                format!("{sx} by {sk}"),
            ));
        }
        let (m, k, n) = (sx.rows(), sx.last(), sk.dims()[1]);
        if sb.rank() != 1 || sb.dims()[0] != n {
            return Err(Error::shape(
                "linear bias",
                format!("[{n}] for {m}×{n} outputs"),
                sb,
            ));
        }
        let mut y = self.alloc(m * n);
        let b = self.value(bias);
        y.chunks_exact_mut(n).for_each(|row| row.copy_from_slice(b));
        gemm(
            m,
            n,
            k,
            &mut y,
            true,
            MatRef::row_major(self.value(x), k),
            MatRef::row_major(self.value(kernel), n),
        );
        Ok(self.push_op(
            replace_last(sx, n),
            y,
            Op::Linear { x, kernel, bias },
            &[x, kernel, bias],
        ))
    }

    /// `a(…, k) · b(n, k)ᵀ → (…, n)`: for weights stored one output per row, as an
    /// embedding table is when it doubles as the output layer (weight tying).
    pub fn matmul_nt(&mut self, a: Var, b: Var) -> Result<Var> {
        let (sa, sb) = (self.shape(a), self.shape(b));
        if sb.rank() != 2 || sa.rank() == 0 || sa.last() != sb.dims()[1] {
            return Err(Error::shape(
                "matmul_nt",
                "equal inner sizes",
                format!("{sa} by the transpose of {sb}"),
            ));
        }
        let (m, k, n) = (sa.rows(), sa.last(), sb.dims()[0]);
        // gemm is slow on a strided right-hand side: transpose b first.
        let mut bt = self.alloc(k * n);
        transpose(self.value(b), n, k, &mut bt);
        let mut y = self.alloc(m * n);
        gemm(
            m,
            n,
            k,
            &mut y,
            false,
            MatRef::row_major(self.value(a), k),
            MatRef::row_major(&bt, n),
        );
        self.recycle(bt);
        Ok(self.push_op(replace_last(sa, n), y, Op::MatMulNt { a, b }, &[a, b]))
    }
}

fn replace_last(shape: Shape, last: usize) -> Shape {
    let mut dims = [0usize; crate::tensor::MAX_RANK];
    let r = shape.rank();
    dims[..r].copy_from_slice(shape.dims());
    dims[r - 1] = last;
    Shape::new(&dims[..r])
}

/// `da += g · bᵀ`, `db += aᵀ · g`.
pub(crate) fn backward(tape: &mut Tape, a: Var, b: Var, g: &[f32]) {
    let (sa, sb) = (tape.shape(a), tape.shape(b));
    let (m, k, n) = (sa.rows(), sa.last(), sb.dims()[1]);
    if tape.requires_grad(a) {
        // gemm is slow on a strided (transposed) right-hand side: transpose b first.
        let mut bt = tape.alloc(k * n);
        transpose(tape.value(b), k, n, &mut bt);
        tape.accumulate_or_write(a, |_, da, fresh| {
            gemm(
                m,
                k,
                n,
                da,
                !fresh,
                MatRef::row_major(g, n),
                MatRef::row_major(&bt, k),
            );
        });
        tape.recycle(bt);
    }
    if tape.requires_grad(b) {
        tape.accumulate(b, |t, db| {
            let a_t = MatRef {
                data: t.value(a),
                row_stride: 1,
                col_stride: k,
            };
            gemm(k, n, m, db, true, a_t, MatRef::row_major(g, n));
        });
    }
}

/// [`backward`] for the product, and `dbias[j] += Σ_r g[r, j]`.
pub(crate) fn linear_backward(tape: &mut Tape, x: Var, kernel: Var, bias: Var, g: &[f32]) {
    backward(tape, x, kernel, g);
    super::bias::bias_backward(tape, bias, g);
}

/// `da += g · b`, `db += gᵀ · a`.
pub(crate) fn backward_nt(tape: &mut Tape, a: Var, b: Var, g: &[f32]) {
    let (sa, sb) = (tape.shape(a), tape.shape(b));
    let (m, k, n) = (sa.rows(), sa.last(), sb.dims()[0]);
    tape.accumulate(a, |t, da| {
        gemm(
            m,
            k,
            n,
            da,
            true,
            MatRef::row_major(g, n),
            MatRef::row_major(t.value(b), k),
        );
    });
    tape.accumulate(b, |t, db| {
        let g_t = MatRef {
            data: g,
            row_stride: 1,
            col_stride: n,
        };
        gemm(n, k, m, db, true, g_t, MatRef::row_major(t.value(a), k));
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck;

    #[test]
    fn gradient_check_linear() {
        gradcheck::check(
            "linear",
            &[
                (&[3, 4], gradcheck::random(12, 41)),
                (&[4, 2], gradcheck::random(8, 42)),
                (&[2], gradcheck::random(2, 43)),
            ],
            |t, v| t.linear(v[0], v[1], v[2]).unwrap(),
        );
    }

    #[test]
    fn gradient_check_transposed_right_hand_side() {
        gradcheck::check(
            "matmul_nt",
            &[
                (&[3, 4], gradcheck::random(12, 31)),
                (&[5, 4], gradcheck::random(20, 32)),
            ],
            |t, v| t.matmul_nt(v[0], v[1]).unwrap(),
        );
    }

    #[test]
    fn product_matches_hand_computation() {
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // 2×3
        let b = [7.0, 8.0, 9.0, 10.0, 11.0, 12.0]; // 3×2
        let mut y = [0.0; 4];
        gemm(
            2,
            2,
            3,
            &mut y,
            false,
            MatRef::row_major(&a, 3),
            MatRef::row_major(&b, 2),
        );
        assert_eq!(y, [58.0, 64.0, 139.0, 154.0]);
        gemm(
            2,
            2,
            3,
            &mut y,
            true,
            MatRef::row_major(&a, 3),
            MatRef::row_major(&b, 2),
        );
        assert_eq!(y, [116.0, 128.0, 278.0, 308.0]);
    }

    #[test]
    fn large_product_matches_naive_loop() {
        let (m, k, n) = (70, 90, 130);
        let a = gradcheck::random(m * k, 1);
        let b = gradcheck::random(k * n, 2);
        let mut y = vec![0.0; m * n];
        gemm(
            m,
            n,
            k,
            &mut y,
            false,
            MatRef::row_major(&a, k),
            MatRef::row_major(&b, n),
        );
        for i in 0..m {
            for j in 0..n {
                let expected: f32 = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
                assert!((y[i * n + j] - expected).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn transpose_swaps_axes() {
        let mut t = [0.0; 6];
        transpose(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3, &mut t);
        assert_eq!(t, [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        // Large enough for the parallel path, with sizes that are not multiples of the tile.
        let (rows, cols) = (1031, 133);
        let src: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
        let mut dst = vec![0.0; rows * cols];
        transpose(&src, rows, cols, &mut dst);
        for r in 0..rows {
            for c in 0..cols {
                assert_eq!(dst[c * rows + r], src[r * cols + c]);
            }
        }
    }

    #[test]
    fn gradient_check() {
        gradcheck::check(
            "matmul",
            &[
                (&[3, 4], gradcheck::random(12, 1)),
                (&[4, 5], gradcheck::random(20, 2)),
            ],
            |t, v| t.matmul(v[0], v[1]).unwrap(),
        );
        // leading dimensions flatten into rows
        gradcheck::check(
            "matmul 3-d",
            &[
                (&[2, 3, 4], gradcheck::random(24, 3)),
                (&[4, 2], gradcheck::random(8, 4)),
            ],
            |t, v| t.matmul(v[0], v[1]).unwrap(),
        );
    }

    #[test]
    fn mismatched_inner_sizes_are_an_error() {
        let mut params = crate::params::ParamStore::new();
        let mut ws = crate::autograd::Workspace::new();
        let mut t = Tape::new(&mut params, &mut ws);
        let a = t.input(&[0.0; 6], Shape::new(&[2, 3]));
        let b = t.input(&[0.0; 8], Shape::new(&[4, 2]));
        let err = t.matmul(a, b).unwrap_err().to_string();
        assert!(err.contains("[2, 3] by [4, 2]"), "{err}");
    }
}
