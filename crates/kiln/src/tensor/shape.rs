//! A tensor shape that lives on the stack, so recording an op never allocates for its shape.

use std::fmt;

/// The most dimensions a kiln tensor has (NHWC images plus room to spare).
pub const MAX_RANK: usize = 6;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    dims: [usize; MAX_RANK],
    rank: usize,
}

impl Shape {
    /// Panics if `dims` has more than [`MAX_RANK`] entries: shapes come from code, and a
    /// user-supplied shape is checked with [`Shape::try_new`] first.
    pub fn new(dims: &[usize]) -> Self {
        Self::try_new(dims).unwrap_or_else(|| panic!("rank {} exceeds {MAX_RANK}", dims.len()))
    }

    pub fn try_new(dims: &[usize]) -> Option<Self> {
        if dims.len() > MAX_RANK {
            return None;
        }
        let mut all = [0; MAX_RANK];
        all[..dims.len()].copy_from_slice(dims);
        Some(Shape {
            dims: all,
            rank: dims.len(),
        })
    }

    pub fn scalar() -> Self {
        Shape::new(&[])
    }

    pub fn dims(&self) -> &[usize] {
        &self.dims[..self.rank]
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of elements (1 for a scalar).
    pub fn numel(&self) -> usize {
        self.dims().iter().product()
    }

    /// The last dimension (the feature axis of a row-major batch); 1 for a scalar.
    pub fn last(&self) -> usize {
        self.dims().last().copied().unwrap_or(1)
    }

    /// Elements before the last axis: the number of rows when viewed as a matrix.
    pub fn rows(&self) -> usize {
        self.numel() / self.last().max(1)
    }

    /// The same shape with a new leading (batch) dimension.
    pub fn with_batch(&self, batch: usize) -> Self {
        let mut dims = [0; MAX_RANK];
        dims[0] = batch;
        dims[1..=self.rank].copy_from_slice(self.dims());
        Shape {
            dims,
            rank: self.rank + 1,
        }
    }

    /// The shape without its leading (batch) dimension.
    pub fn without_batch(&self) -> Self {
        Shape::new(&self.dims()[1..])
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.dims())
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.dims())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_batch_dimension() {
        let s = Shape::new(&[28, 28]);
        assert_eq!(s.numel(), 784);
        let b = s.with_batch(64);
        assert_eq!(b.dims(), &[64, 28, 28]);
        assert_eq!(b.rows(), 64 * 28);
        assert_eq!(b.without_batch(), s);
        assert_eq!(Shape::scalar().numel(), 1);
        assert!(Shape::try_new(&[1; 7]).is_none());
    }
}
