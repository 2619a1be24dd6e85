//! Embedding lookup: `y[r] = table[ids[r]]`, a gather of rows. Its backward is the matching
//! scatter-add: each row of the upstream gradient is added to the table row it came from,
//! so a token seen twice in a batch collects both contributions.

use crate::autograd::{Op, Tape, Var};
use crate::error::{Error, Result};
use crate::tensor::Shape;

impl Tape<'_> {
    /// Rows `ids` of `table` (vocabulary × width), as an `ids.len()` × width matrix.
    pub fn embedding(&mut self, table: Var, ids: &[u32]) -> Result<Var> {
        let shape = self.shape(table);
        if shape.rank() != 2 {
            return Err(Error::shape("embedding table", "a matrix (vocab, width)", shape));
        }
        let (vocab, width) = (shape.dims()[0], shape.dims()[1]);
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(Error::TokenOutOfRange {
                token: bad as usize,
                vocab,
            });
        }
        let mut y = self.alloc(ids.len() * width);
        let values = self.value(table);
        for (row, &id) in y.chunks_exact_mut(width).zip(ids) {
            row.copy_from_slice(&values[id as usize * width..][..width]);
        }
        let out = self.push_op(
            Shape::new(&[ids.len(), width]),
            y,
            Op::Embedding { table },
            &[table],
        );
        if self.requires_grad(out) {
            // Ids below 2²⁴ are exact in f32; the vocabulary check above keeps them small.
            let mut saved = self.alloc(ids.len());
            saved.iter_mut().zip(ids).for_each(|(s, &id)| *s = id as f32);
            self.set_saved(out, saved);
        }
        Ok(out)
    }
}

/// `dtable[ids[r]] += g[r]`.
pub(crate) fn backward(tape: &mut Tape, table: Var, out: Var, g: &[f32]) {
    let width = tape.shape(table).dims()[1];
    tape.accumulate(table, |t, dtable| {
        for (row, &id) in g.chunks_exact(width).zip(t.saved(out)) {
            let dst = &mut dtable[id as usize * width..][..width];
            dst.iter_mut().zip(row).for_each(|(d, g)| *d += g);
        }
    });
}

#[cfg(test)]
mod tests {
    use crate::autograd::{Tape, Workspace};
    use crate::ops::gradcheck;
    use crate::params::ParamStore;
    use crate::tensor::Shape;

    #[test]
    fn gathers_rows_and_scatters_gradients_back() {
        let (mut params, mut ws) = (ParamStore::new(), Workspace::new());
        let mut tape = Tape::new(&mut params, &mut ws);
        let table = tape.leaf(&[0.0, 1.0, 10.0, 11.0, 20.0, 21.0], Shape::new(&[3, 2]), true);
        let y = tape.embedding(table, &[2, 0, 2]).unwrap();
        assert_eq!(tape.value(y), &[20.0, 21.0, 0.0, 1.0, 20.0, 21.0]);
        tape.backward_from(y, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        // row 2 was used twice: (1,2) + (5,6); row 1 never.
        assert_eq!(tape.grad(table).unwrap(), &[3.0, 4.0, 0.0, 0.0, 6.0, 8.0]);
    }

    #[test]
    fn gradient_check_with_repeated_ids() {
        gradcheck::check("embedding", &[(&[4, 3], gradcheck::random(12, 3))], |t, v| {
            t.embedding(v[0], &[1, 3, 1, 0, 1]).unwrap()
        });
    }

    #[test]
    fn an_id_outside_the_vocabulary_is_an_error() {
        let (mut params, mut ws) = (ParamStore::new(), Workspace::new());
        let mut tape = Tape::new(&mut params, &mut ws);
        let table = tape.input(&[0.0; 6], Shape::new(&[3, 2]));
        let err = tape.embedding(table, &[0, 3]).unwrap_err().to_string();
        assert!(
            err.contains("token id 3") && err.contains("vocabulary of 3"),
            "{err}"
        );
    }
}
