//! Pruned kernels stored sparsely in a model file: a bitmap of the nonzero weights and
//! their values, for f32 kernels and for int8 codes.

/// Metadata key listing the float kernels stored sparsely.
pub(super) const SPARSE_KEY: &str = "kiln.sparse";
/// Metadata key listing the int8 kernels stored sparsely (a pruned, then quantized model).
pub(super) const SPARSE_INT8_KEY: &str = "kiln.sparse_int8";

/// A pruned kernel stored as a bitmap of its nonzero weights (bit i % 8 of byte i / 8)
/// and their values in order: smaller than the dense tensor once 1 weight in 32 (f32) or
/// 1 in 8 (int8 codes) is zero.
pub(super) struct SparseKernel<T> {
    pub(super) name: String,
    pub(super) bitmap: Vec<u8>,
    pub(super) values: Vec<T>,
    /// `[values.len()]`, kept to lend as the values' dimensions.
    pub(super) count: [usize; 1],
}

impl<T: Copy + Default + PartialEq> SparseKernel<T> {
    pub(super) fn if_smaller(name: &str, weights: &[T]) -> Option<SparseKernel<T>> {
        let zero = T::default();
        let values: Vec<T> = weights.iter().copied().filter(|w| *w != zero).collect();
        let bitmap_bytes = weights.len().div_ceil(8);
        let width = std::mem::size_of::<T>();
        if bitmap_bytes + width * values.len() >= std::mem::size_of_val(weights) {
            return None;
        }
        let mut bitmap = vec![0u8; bitmap_bytes];
        for (i, w) in weights.iter().enumerate() {
            if *w != zero {
                bitmap[i / 8] |= 1 << (i % 8);
            }
        }
        Some(SparseKernel {
            name: name.to_string(),
            count: [values.len()],
            bitmap,
            values,
        })
    }

    /// The dense weights back, or why the stored pieces do not make `len` of them.
    pub(super) fn expand(bitmap: &[u8], values: &[T], len: usize) -> std::result::Result<Vec<T>, String> {
        if bitmap.len() != len.div_ceil(8) {
            return Err(format!("a bitmap of {} bytes for {len} weights", bitmap.len()));
        }
        let mut next = values.iter();
        let dense: Vec<T> = (0..len)
            .map(|i| match bitmap[i / 8] >> (i % 8) & 1 {
                1 => next.next().copied().ok_or(()),
                _ => Ok(T::default()),
            })
            .collect::<std::result::Result<_, ()>>()
            .map_err(|()| {
                format!(
                    "the bitmap marks more weights than the {} values stored",
                    values.len()
                )
            })?;
        if next.next().is_some() {
            return Err(format!("{} values stored for fewer marked weights", values.len()));
        }
        Ok(dense)
    }
}

#[cfg(test)]
mod tests {
    use super::SparseKernel;

    #[test]
    fn sparse_kernels_round_trip_and_refuse_pieces_that_do_not_fit() {
        let weights = [0.0, 1.5, 0.0, 0.0, -2.0, 0.0, 0.0, 0.0, 0.0, 3.0];
        let k = SparseKernel::if_smaller("k", &weights).expect("7 of 10 zero: smaller");
        assert_eq!(k.values, [1.5, -2.0, 3.0]);
        assert_eq!(k.bitmap, [0b0001_0010, 0b0000_0010]);
        assert_eq!(SparseKernel::expand(&k.bitmap, &k.values, 10).unwrap(), weights);
        assert!(SparseKernel::if_smaller("dense", &[1.0; 64]).is_none());
        let short = SparseKernel::expand(&k.bitmap, &k.values[..2], 10).unwrap_err();
        assert!(short.contains("more weights than the 2 values"), "{short}");
        let long = SparseKernel::expand(&k.bitmap, &[1.0, 2.0, 3.0, 4.0], 10).unwrap_err();
        assert!(long.contains("4 values stored for fewer"), "{long}");
        assert!(SparseKernel::expand(&k.bitmap, &k.values, 30).is_err());
        // int8 codes: worth it once more than 1 in 8 is zero.
        let codes: Vec<i8> = (0..64)
            .map(|i| if i % 4 == 0 { (i - 30) as i8 } else { 0 })
            .collect();
        let k = SparseKernel::if_smaller("q", &codes).expect("3 of 4 zero");
        assert_eq!((k.values.len(), k.bitmap.len()), (16, 8));
        assert_eq!(SparseKernel::expand(&k.bitmap, &k.values, 64).unwrap(), codes);
        assert!(SparseKernel::if_smaller("q", &[1i8; 64]).is_none());
    }
}
