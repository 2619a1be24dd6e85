//! Batched matrix product, `y[i] = a[i] · b[i]` for each of a batch of matrices (PyTorch's
//! `bmm`, Keras's `batch_dot` on rank-3 inputs): the building block for attention-like
//! products written by hand. (kiln's own attention fuses its products into one op.)

use rayon::prelude::*;

use super::matmul::{gemm_single_thread, MatRef};
use crate::autograd::{Op, Tape, Var};
use crate::error::{Error, Result};
use crate::tensor::Shape;

impl Tape<'_> {
    /// `a (batch × m × k) · b (batch × k × n) → batch × m × n`.
    pub fn batch_matmul(&mut self, a: Var, b: Var) -> Result<Var> {
        let (sa, sb) = (self.shape(a), self.shape(b));
        let [batch, m, k] = dims3(sa)?;
        let [batch_b, k_b, n] = dims3(sb)?;
        if batch != batch_b || k != k_b {
            return Err(Error::shape(
                "batch_matmul",
                "batch × m × k and batch × k × n",
                format!("{sa} and {sb}"),
            ));
        }
        let mut y = self.alloc(batch * m * n);
        let (av, bv) = (self.value(a), self.value(b));
        y.par_chunks_mut((m * n).max(1)).enumerate().for_each(|(i, y)| {
            let (ai, bi) = (&av[i * m * k..][..m * k], &bv[i * k * n..][..k * n]);
            gemm_single_thread(
                m,
                n,
                k,
                y,
                false,
                MatRef::row_major(ai, k),
                MatRef::row_major(bi, n),
            );
        });
        Ok(self.push_op(Shape::new(&[batch, m, n]), y, Op::BatchMatMul { a, b }, &[a, b]))
    }
}

fn dims3(s: Shape) -> Result<[usize; 3]> {
    match s.dims() {
        &[b, r, c] => Ok([b, r, c]),
        _ => Err(Error::shape("batch_matmul", "rank-3 operands", s)),
    }
}

/// `da[i] += g[i] · b[i]ᵀ`, `db[i] += a[i]ᵀ · g[i]`.
pub(crate) fn backward(tape: &mut Tape, a: Var, b: Var, g: &[f32]) {
    let (sa, sb) = (tape.shape(a), tape.shape(b));
    let (m, k, n) = (sa.dims()[1], sa.dims()[2], sb.dims()[2]);
    tape.accumulate(a, |t, da| {
        let bv = t.value(b);
        da.par_chunks_mut((m * k).max(1)).enumerate().for_each(|(i, da)| {
            let b_t = MatRef {
                data: &bv[i * k * n..][..k * n],
                row_stride: 1,
                col_stride: n,
            };
            gemm_single_thread(
                m,
                k,
                n,
                da,
                true,
                MatRef::row_major(&g[i * m * n..][..m * n], n),
                b_t,
            );
        });
    });
    tape.accumulate(b, |t, db| {
        let av = t.value(a);
        db.par_chunks_mut((k * n).max(1)).enumerate().for_each(|(i, db)| {
            let a_t = MatRef {
                data: &av[i * m * k..][..m * k],
                row_stride: 1,
                col_stride: k,
            };
            gemm_single_thread(
                k,
                n,
                m,
                db,
                true,
                a_t,
                MatRef::row_major(&g[i * m * n..][..m * n], n),
            );
        });
    });
}

#[cfg(test)]
mod tests {
    use crate::autograd::{Tape, Workspace};
    use crate::ops::gradcheck;
    use crate::params::ParamStore;
    use crate::tensor::Shape;

    #[test]
    fn each_batch_item_is_its_own_product() {
        let (mut params, mut ws) = (ParamStore::new(), Workspace::new());
        let mut tape = Tape::inference(&mut params, &mut ws);
        // Item 0: [1 2] · [[1],[1]] = 3; item 1: [3 4] · [[2],[0]] = 6.
        let a = tape.input(&[1.0, 2.0, 3.0, 4.0], Shape::new(&[2, 1, 2]));
        let b = tape.input(&[1.0, 1.0, 2.0, 0.0], Shape::new(&[2, 2, 1]));
        let y = tape.batch_matmul(a, b).unwrap();
        assert_eq!(tape.value(y), &[3.0, 6.0]);
        assert_eq!(tape.shape(y).dims(), &[2, 1, 1]);
    }

    #[test]
    fn gradient_check() {
        gradcheck::check(
            "batch_matmul",
            &[
                (&[3, 2, 4], gradcheck::random(24, 51)),
                (&[3, 4, 5], gradcheck::random(60, 52)),
            ],
            |t, v| t.batch_matmul(v[0], v[1]).unwrap(),
        );
    }

    #[test]
    fn mismatched_operands_are_errors() {
        let (mut params, mut ws) = (ParamStore::new(), Workspace::new());
        let mut tape = Tape::inference(&mut params, &mut ws);
        let a = tape.input(&[0.0; 8], Shape::new(&[2, 2, 2]));
        let b = tape.input(&[0.0; 12], Shape::new(&[3, 2, 2]));
        assert!(tape
            .batch_matmul(a, b)
            .unwrap_err()
            .to_string()
            .contains("batch × m × k"));
        let flat = tape.input(&[0.0; 4], Shape::new(&[2, 2]));
        assert!(tape
            .batch_matmul(flat, b)
            .unwrap_err()
            .to_string()
            .contains("rank-3"));
    }
}
