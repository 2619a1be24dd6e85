//! Causal multi-head self-attention, fused: scores, causal mask, softmax, dropout on the
//! weights and the weighted sum of values in one op, as llm.c and FlashAttention do,
//! instead of a chain of batched matmuls with a T×T mask tensor in between.
//!
//! Input: the packed projections `qkv` (batch·seq × 3·width, each row `[q | k | v]`, heads
//! side by side within each). Output: batch·seq × width, heads side by side again, ready
//! for the output projection. For head h and query i, `y_i = Σ_{j≤i} p_ij v_j` with
//! `p_i = softmax_j(q_i·k_j / √d)` over the keys j ≤ i only (a position never sees the
//! future). The weights p are saved for backward ([batch, heads, seq, seq]; zero above
//! the diagonal), followed by the dropout mask when there is one.

use rayon::prelude::*;

use super::matmul::{gemm_single_thread, MatRef};
use crate::autograd::{Op, Tape, Var};
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::tensor::Shape;

/// The op's geometry, stored in the tape node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    /// Whether the saved buffer holds a dropout mask after the weights.
    pub dropout: bool,
}

impl AttentionShape {
    fn width(&self, qkv_width: usize) -> usize {
        qkv_width / 3
    }
}

impl Tape<'_> {
    /// Causal self-attention over `qkv` (batch·seq × 3·width). With `dropout` = (rate, rng)
    /// and a rate above zero, each weight is dropped with that probability during training.
    pub fn causal_self_attention(
        &mut self,
        qkv: Var,
        batch: usize,
        seq: usize,
        heads: usize,
        dropout: Option<(f32, &mut Rng)>,
    ) -> Result<Var> {
        let shape = self.shape(qkv);
        let cols = shape.last();
        if shape.rank() != 2
            || shape.rows() != batch * seq
            || !cols.is_multiple_of(3)
            || !(cols / 3).is_multiple_of(heads)
        {
            return Err(Error::shape(
                "attention",
                format!(
                    "batch·seq = {} rows of 3·width with width divisible by {heads} heads",
                    batch * seq
                ),
                shape,
            ));
        }
        let width = cols / 3;
        let mut weights = self.alloc(batch * heads * seq * seq);
        let mask = match dropout {
            Some((rate, rng)) if rate > 0.0 => {
                if !(0.0..1.0).contains(&rate) {
                    return Err(Error::setting("attention dropout rate", rate, "a rate in [0, 1)"));
                }
                let mut mask = self.alloc(weights.len());
                super::dropout::fill_mask(&mut mask, rate, rng);
                Some(mask)
            }
            _ => None,
        };
        let mut y = self.alloc(batch * seq * width);
        let geometry = AttentionShape {
            batch,
            seq,
            heads,
            dropout: mask.is_some(),
        };
        attend(self.value(qkv), geometry, &mut weights, mask.as_deref(), &mut y);
        let out = self.push_op(
            Shape::new(&[batch * seq, width]),
            y,
            Op::CausalAttention { qkv, shape: geometry },
            &[qkv],
        );
        if self.requires_grad(out) {
            if let Some(mask) = &mask {
                weights.extend_from_slice(mask);
            }
            self.set_saved(out, weights);
        } else {
            self.recycle(weights);
        }
        if let Some(mask) = mask {
            self.recycle(mask);
        }
        Ok(out)
    }
}

/// Forward for every sequence of the batch, one sequence per task. Per head, the products
/// are tuned matmuls over the full T×T square (the masked half is computed and then
/// zeroed: at these sizes a microkernel on the whole square beats a scalar triangle).
fn attend(qkv: &[f32], s: AttentionShape, weights: &mut [f32], mask: Option<&[f32]>, y: &mut [f32]) {
    let cols = qkv.len() / (s.batch * s.seq);
    let width = s.width(cols);
    let head = width / s.heads;
    let scale = 1.0 / (head as f32).sqrt();
    let (t, per_seq) = (s.seq, s.heads * s.seq * s.seq);
    y.par_chunks_mut(t * width)
        .zip(weights.par_chunks_mut(per_seq))
        .enumerate()
        .for_each(|(b, (y, weights))| {
            let qkv = &qkv[b * t * cols..][..t * cols];
            let mut out = vec![0.0f32; t * head];
            let mut dropped = mask.map(|_| vec![0.0f32; t * t]);
            for h in 0..s.heads {
                let p = &mut weights[h * t * t..][..t * t];
                let (q, k, v) = head_views(qkv, cols, width, h * head);
                gemm_single_thread(t, t, head, p, false, q, transposed(k, cols));
                for (i, row) in p.chunks_exact_mut(t).enumerate() {
                    row[..=i].iter_mut().for_each(|v| *v *= scale);
                    super::softmax::softmax_in_place(&mut row[..=i]);
                    row[i + 1..].fill(0.0);
                }
                let used: &[f32] = match (&mut dropped, mask) {
                    (Some(d), Some(m)) => {
                        let m = &m[b * per_seq + h * t * t..][..t * t];
                        d.iter_mut()
                            .zip(p.iter().zip(m))
                            .for_each(|(d, (p, m))| *d = p * m);
                        d
                    }
                    _ => p,
                };
                gemm_single_thread(t, head, t, &mut out, false, MatRef::row_major(used, t), v);
                for (i, row) in out.chunks_exact(head).enumerate() {
                    y[i * width + h * head..][..head].copy_from_slice(row);
                }
            }
        });
}

/// Views of head `offset`'s queries, keys and values (each seq × head, rows `cols` apart).
fn head_views(qkv: &[f32], cols: usize, width: usize, offset: usize) -> (MatRef<'_>, MatRef<'_>, MatRef<'_>) {
    let view = |part: usize| MatRef {
        data: &qkv[part * width + offset..],
        row_stride: cols,
        col_stride: 1,
    };
    (view(0), view(1), view(2))
}

/// The transpose of a row-strided view.
fn transposed(m: MatRef<'_>, cols: usize) -> MatRef<'_> {
    MatRef {
        data: m.data,
        row_stride: 1,
        col_stride: cols,
    }
}

/// Backward of [`attend`]. With weights p, dropped weights p̃ = p·m:
/// `dv += p̃ᵀ dy`; `dp = (dy vᵀ)·m`; `ds = p (dp − Σ_k p dp)` (softmax);
/// `dq += ds k / √d`; `dk += dsᵀ q / √d`.
pub(crate) fn backward(tape: &mut Tape, qkv: Var, out: Var, s: AttentionShape, g: &[f32]) {
    tape.accumulate(qkv, |tp, dqkv| {
        let (values, saved) = (tp.value(qkv), tp.saved(out));
        let cols = values.len() / (s.batch * s.seq);
        let width = s.width(cols);
        let head = width / s.heads;
        let scale = 1.0 / (head as f32).sqrt();
        let (t, per_seq) = (s.seq, s.heads * s.seq * s.seq);
        let (weights, mask) = saved.split_at(s.batch * per_seq);
        dqkv.par_chunks_mut(t * cols).enumerate().for_each(|(b, dqkv)| {
            let qkv = &values[b * t * cols..][..t * cols];
            let dy = &g[b * t * width..][..t * width];
            let (mut ds, mut dropped) = (vec![0.0f32; t * t], vec![0.0f32; t * t]);
            let mut grad = vec![0.0f32; t * head];
            for h in 0..s.heads {
                let at = b * per_seq + h * t * t;
                let p = &weights[at..][..t * t];
                let m = s.dropout.then(|| &mask[at..][..t * t]);
                let (q, k, v) = head_views(qkv, cols, width, h * head);
                let dy_h = MatRef {
                    data: &dy[h * head..],
                    row_stride: width,
                    col_stride: 1,
                };
                // dv = p̃ᵀ dy
                let used: &[f32] = match m {
                    Some(m) => {
                        dropped
                            .iter_mut()
                            .zip(p.iter().zip(m))
                            .for_each(|(d, (p, m))| *d = p * m);
                        &dropped
                    }
                    None => p,
                };
                gemm_single_thread(
                    t,
                    head,
                    t,
                    &mut grad,
                    false,
                    transposed(MatRef::row_major(used, t), t),
                    dy_h,
                );
                add_columns(dqkv, cols, 2 * width + h * head, &grad);
                // dp = dy vᵀ (· m), then the softmax backward in place.
                gemm_single_thread(t, t, head, &mut ds, false, dy_h, transposed(v, cols));
                for (i, (ds, p)) in ds.chunks_exact_mut(t).zip(p.chunks_exact(t)).enumerate() {
                    if let Some(m) = m {
                        ds.iter_mut().zip(&m[i * t..][..t]).for_each(|(d, m)| *d *= m);
                    }
                    let pdp: f32 = p[..=i].iter().zip(&ds[..=i]).map(|(p, d)| p * d).sum();
                    for (d, p) in ds.iter_mut().zip(p) {
                        *d = p * (*d - pdp) * scale;
                    }
                }
                gemm_single_thread(t, head, t, &mut grad, false, MatRef::row_major(&ds, t), k);
                add_columns(dqkv, cols, h * head, &grad);
                gemm_single_thread(
                    t,
                    head,
                    t,
                    &mut grad,
                    false,
                    transposed(MatRef::row_major(&ds, t), t),
                    q,
                );
                add_columns(dqkv, cols, width + h * head, &grad);
            }
        });
    });
}

/// `dst[i, offset..offset + w] += src[i, ..]` for a seq × w block `src`.
fn add_columns(dst: &mut [f32], cols: usize, offset: usize, src: &[f32]) {
    let w = src.len() / (dst.len() / cols);
    for (row, s) in dst.chunks_exact_mut(cols).zip(src.chunks_exact(w)) {
        row[offset..offset + w]
            .iter_mut()
            .zip(s)
            .for_each(|(d, s)| *d += s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::Workspace;
    use crate::ops::gradcheck;
    use crate::params::ParamStore;

    /// Attention written out plainly: scores, mask with −∞, softmax, weighted sum.
    fn reference(qkv: &[f32], batch: usize, seq: usize, heads: usize) -> Vec<f32> {
        let width = qkv.len() / (batch * seq * 3);
        let head = width / heads;
        let mut y = vec![0.0; batch * seq * width];
        for b in 0..batch {
            for h in 0..heads {
                for i in 0..seq {
                    let el = |t: usize, part: usize, d: usize| {
                        qkv[(b * seq + t) * 3 * width + part * width + h * head + d]
                    };
                    let scores: Vec<f64> = (0..seq)
                        .map(|j| {
                            if j > i {
                                f64::NEG_INFINITY
                            } else {
                                (0..head).map(|d| (el(i, 0, d) * el(j, 1, d)) as f64).sum::<f64>()
                                    / (head as f64).sqrt()
                            }
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for d in 0..head {
                        let v: f64 = (0..seq).map(|j| e[j] / z * el(j, 2, d) as f64).sum();
                        y[(b * seq + i) * width + h * head + d] = v as f32;
                    }
                }
            }
        }
        y
    }

    #[test]
    fn matches_attention_written_out_with_a_mask() {
        let (batch, seq, heads, width) = (2, 5, 2, 4);
        let qkv = gradcheck::random(batch * seq * 3 * width, 21);
        let (mut params, mut ws) = (ParamStore::new(), Workspace::new());
        let mut tape = Tape::inference(&mut params, &mut ws);
        let x = tape.input(&qkv, Shape::new(&[batch * seq, 3 * width]));
        let y = tape.causal_self_attention(x, batch, seq, heads, None).unwrap();
        for (a, b) in tape.value(y).iter().zip(reference(&qkv, batch, seq, heads)) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn a_position_does_not_depend_on_later_ones() {
        let (seq, width) = (4, 4);
        let mut qkv = gradcheck::random(seq * 3 * width, 5);
        let run = |qkv: &[f32]| {
            let (mut params, mut ws) = (ParamStore::new(), Workspace::new());
            let mut tape = Tape::inference(&mut params, &mut ws);
            let x = tape.input(qkv, Shape::new(&[seq, 3 * width]));
            let y = tape.causal_self_attention(x, 1, seq, 2, None).unwrap();
            tape.value(y).to_vec()
        };
        let before = run(&qkv);
        // Change everything about the last position.
        qkv[(seq - 1) * 3 * width..].iter_mut().for_each(|v| *v += 1.0);
        let after = run(&qkv);
        assert_eq!(before[..(seq - 1) * width], after[..(seq - 1) * width]);
        assert_ne!(before[(seq - 1) * width..], after[(seq - 1) * width..]);
    }

    #[test]
    fn gradient_check_with_mask() {
        let (batch, seq, heads, width) = (2, 4, 2, 4);
        gradcheck::check(
            "causal_self_attention",
            &[(
                &[batch * seq, 3 * width],
                gradcheck::random(batch * seq * 3 * width, 8),
            )],
            |t, v| t.causal_self_attention(v[0], batch, seq, heads, None).unwrap(),
        );
    }

    #[test]
    fn gradient_check_with_dropout_on_the_weights() {
        let (batch, seq, heads, width) = (1, 5, 1, 4);
        // The same seed each evaluation, so every finite difference sees the same mask.
        gradcheck::check(
            "causal_self_attention_dropout",
            &[(
                &[batch * seq, 3 * width],
                gradcheck::random(batch * seq * 3 * width, 9),
            )],
            |t, v| {
                let mut rng = Rng::new(4);
                t.causal_self_attention(v[0], batch, seq, heads, Some((0.3, &mut rng)))
                    .unwrap()
            },
        );
    }

    #[test]
    fn shapes_that_do_not_fit_are_errors() {
        let (mut params, mut ws) = (ParamStore::new(), Workspace::new());
        let mut tape = Tape::inference(&mut params, &mut ws);
        let x = tape.input(&[0.0; 24], Shape::new(&[2, 12]));
        let err = tape
            .causal_self_attention(x, 1, 2, 3, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("divisible by 3 heads"), "{err}");
    }
}
