//! Tensors: a shape and contiguous row-major f32 storage.

mod shape;

pub use shape::{Shape, MAX_RANK};

use crate::error::{Error, Result};

#[derive(Clone, PartialEq)]
pub struct Tensor {
    shape: Shape,
    data: Vec<f32>,
}

impl Tensor {
    /// Fails if `data` does not hold exactly as many values as `dims` describes.
    pub fn new(dims: &[usize], data: Vec<f32>) -> Result<Self> {
        let shape = Shape::try_new(dims).ok_or_else(|| {
            Error::shape(
                "tensor",
                format!("at most {MAX_RANK} dimensions"),
                format!("{dims:?}"),
            )
        })?;
        if shape.numel() != data.len() {
            return Err(Error::shape(
                format!("tensor of shape {dims:?}"),
                format!("{} values", shape.numel()),
                data.len(),
            ));
        }
        Ok(Tensor { shape, data })
    }

    pub fn from_shape(shape: Shape, data: Vec<f32>) -> Self {
        assert_eq!(shape.numel(), data.len(), "tensor data does not fit {shape}");
        Tensor { shape, data }
    }

    pub fn zeros(dims: &[usize]) -> Self {
        let shape = Shape::new(dims);
        Tensor {
            shape,
            data: vec![0.0; shape.numel()],
        }
    }

    pub fn shape(&self) -> Shape {
        self.shape
    }

    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }

    pub fn data(&self) -> &[f32] {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let preview: Vec<f32> = self.data.iter().take(8).copied().collect();
        write!(f, "Tensor{} {:?}", self.shape, preview)?;
        if self.data.len() > 8 {
            write!(f, "…")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_checks_the_value_count() {
        assert!(Tensor::new(&[2, 3], vec![0.0; 6]).is_ok());
        let err = Tensor::new(&[2, 3], vec![0.0; 5]).unwrap_err();
        assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
        assert!(err.to_string().contains("expected 6 values, got 5"), "{err}");
    }
}
