//! The integer matrix product behind int8 inference: unsigned 8-bit activations times
//! signed 8-bit weights, accumulated exactly in i32.
//!
//! Weights are packed once into panels of 16 outputs × 4 consecutive inputs, the operand
//! shape of AVX-512 VNNI's `vpdpbusd` (16 lanes, each the sum of 4 u8·i8 products). On a
//! CPU with VNNI the product runs 4 rows × 32 outputs at a time in registers; elsewhere a
//! portable loop over the same layout gives bit-identical sums (integer arithmetic has no
//! rounding, so the two paths are tested for equality, not closeness).

/// Outputs per panel: one 512-bit register of i32 sums.
pub const PANEL: usize = 16;
/// Inputs per VNNI group: 4 bytes per i32 lane.
pub const GROUP: usize = 4;

/// Weights of a (k inputs → n outputs) layer, packed for [`gemm_u8i8`].
#[derive(Debug, Clone, PartialEq)]
pub struct PackedI8 {
    /// Inputs and outputs of the layer.
    pub k: usize,
    pub n: usize,
    /// Inputs rounded up to a whole group; activation rows are this long (zero padded).
    pub k_padded: usize,
    /// [panel][group][output in panel][input in group], zero padded.
    data: Vec<i8>,
    /// Σₖ w[k][j] per output: subtracts the activations' zero point in one step.
    pub column_sums: Vec<i32>,
}

impl PackedI8 {
    /// Packs `w`, row-major (k, n) as kiln stores a Dense kernel (inputs × units).
    pub fn pack(w: &[i8], k: usize, n: usize) -> PackedI8 {
        assert_eq!(w.len(), k * n, "a ({k}, {n}) kernel");
        let k_padded = k.div_ceil(GROUP) * GROUP;
        let panels = n.div_ceil(PANEL);
        let groups = k_padded / GROUP;
        let mut data = vec![0i8; panels * groups * PANEL * GROUP];
        for input in 0..k {
            for output in 0..n {
                let (panel, lane) = (output / PANEL, output % PANEL);
                let (group, byte) = (input / GROUP, input % GROUP);
                data[((panel * groups + group) * PANEL + lane) * GROUP + byte] = w[input * n + output];
            }
        }
        let column_sums = (0..n)
            .map(|j| (0..k).map(|i| w[i * n + j] as i32).sum())
            .collect();
        PackedI8 {
            k,
            n,
            k_padded,
            data,
            column_sums,
        }
    }

    fn panels(&self) -> usize {
        self.n.div_ceil(PANEL)
    }

    fn groups(&self) -> usize {
        self.k_padded / GROUP
    }

    /// One panel's bytes: groups × 16 outputs × 4 inputs.
    fn panel(&self, p: usize) -> &[i8] {
        let len = self.groups() * PANEL * GROUP;
        &self.data[p * len..(p + 1) * len]
    }
}

/// `c[i][j] = Σₖ a[i][k] · w[k][j]` for the `m` rows of `a` (each `w.k_padded` bytes, the
/// padding zero); `c` is (m, n) row-major.
pub fn gemm_u8i8(a: &[u8], m: usize, w: &PackedI8, c: &mut [i32]) {
    assert_eq!(a.len(), m * w.k_padded, "{m} rows of {} bytes", w.k_padded);
    assert_eq!(c.len(), m * w.n, "an ({m}, {}) output", w.n);
    #[cfg(target_arch = "x86_64")]
    if vnni::available() {
        // SAFETY: the CPU has AVX-512F and AVX-512 VNNI (checked just above).
        unsafe { vnni::gemm(a, m, w, c) };
        return;
    }
    portable(a, m, w, c);
}

/// The reference: the same sums in plain integer loops (any CPU).
pub fn portable(a: &[u8], m: usize, w: &PackedI8, c: &mut [i32]) {
    let groups = w.groups();
    for (row, out) in a.chunks_exact(w.k_padded).zip(c.chunks_exact_mut(w.n)).take(m) {
        for p in 0..w.panels() {
            let panel = w.panel(p);
            let mut sums = [0i32; PANEL];
            for g in 0..groups {
                let x = &row[g * GROUP..][..GROUP];
                let block = &panel[g * PANEL * GROUP..][..PANEL * GROUP];
                for (lane, s) in sums.iter_mut().enumerate() {
                    let ws = &block[lane * GROUP..][..GROUP];
                    *s += (0..GROUP).map(|b| x[b] as i32 * ws[b] as i32).sum::<i32>();
                }
            }
            let first = p * PANEL;
            let width = PANEL.min(w.n - first);
            out[first..first + width].copy_from_slice(&sums[..width]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;

    use super::{PackedI8, GROUP, PANEL};

    pub fn available() -> bool {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni")
    }

    /// Rows in blocks of 4 and outputs in pairs of panels, then the leftovers one at a time.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub unsafe fn gemm(a: &[u8], m: usize, w: &PackedI8, c: &mut [i32]) {
        let panels = w.panels();
        let mut row = 0;
        while row < m {
            let rows = (m - row).min(4);
            let mut p = 0;
            while p < panels {
                let width = (panels - p).min(2);
                match (rows, width) {
                    (4, 2) => block::<4, 2>(a, row, p, w, c),
                    (4, 1) => block::<4, 1>(a, row, p, w, c),
                    (_, 2) => (row..row + rows).for_each(|r| block::<1, 2>(a, r, p, w, c)),
                    _ => (row..row + rows).for_each(|r| block::<1, 1>(a, r, p, w, c)),
                }
                p += width;
            }
            row += rows;
        }
    }

    /// R rows × P panels of sums kept in R·P registers over the whole of k.
    #[target_feature(enable = "avx512f,avx512vnni")]
    #[inline]
    unsafe fn block<const R: usize, const P: usize>(
        a: &[u8],
        row: usize,
        p: usize,
        w: &PackedI8,
        c: &mut [i32],
    ) {
        let groups = w.groups();
        let mut acc = [[_mm512_setzero_si512(); P]; R];
        let rows: [&[u8]; R] = std::array::from_fn(|r| &a[(row + r) * w.k_padded..][..w.k_padded]);
        let panels: [&[i8]; P] = std::array::from_fn(|q| w.panel(p + q));
        for g in 0..groups {
            let weights: [__m512i; P] =
                std::array::from_fn(|q| _mm512_loadu_si512(panels[q][g * PANEL * GROUP..].as_ptr().cast()));
            for (sums, x) in acc.iter_mut().zip(&rows) {
                let x = x[g * GROUP..][..GROUP].try_into().expect("4 bytes");
                let broadcast = _mm512_set1_epi32(i32::from_le_bytes(x));
                for (sum, weight) in sums.iter_mut().zip(&weights) {
                    *sum = _mm512_dpbusd_epi32(*sum, broadcast, *weight);
                }
            }
        }
        for (r, sums) in acc.iter().enumerate() {
            let out = &mut c[(row + r) * w.n..][..w.n];
            for (q, sum) in sums.iter().enumerate() {
                let first = (p + q) * PANEL;
                let width = PANEL.min(w.n - first);
                if width == PANEL {
                    _mm512_storeu_si512(out[first..first + PANEL].as_mut_ptr().cast(), *sum);
                } else {
                    let mut lanes = [0i32; PANEL];
                    _mm512_storeu_si512(lanes.as_mut_ptr().cast(), *sum);
                    out[first..first + width].copy_from_slice(&lanes[..width]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// The definition, on unpacked weights.
    fn naive(a: &[u8], m: usize, k: usize, w: &[i8], n: usize) -> Vec<i32> {
        let k_padded = k.div_ceil(GROUP) * GROUP;
        let mut c = vec![0i32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k)
                    .map(|t| a[i * k_padded + t] as i32 * w[t * n + j] as i32)
                    .sum();
            }
        }
        c
    }

    fn case(
        m: usize,
        k: usize,
        n: usize,
        rng: &mut Rng,
        a_of: impl Fn(&mut Rng) -> u8,
        w_of: impl Fn(&mut Rng) -> i8,
    ) {
        let k_padded = k.div_ceil(GROUP) * GROUP;
        let mut a = vec![0u8; m * k_padded];
        for i in 0..m {
            for t in 0..k {
                a[i * k_padded + t] = a_of(rng);
            }
        }
        let w: Vec<i8> = (0..k * n).map(|_| w_of(rng)).collect();
        let packed = PackedI8::pack(&w, k, n);
        let expected = naive(&a, m, k, &w, n);
        let mut c = vec![0i32; m * n];
        portable(&a, m, &packed, &mut c);
        assert_eq!(c, expected, "portable, m={m} k={k} n={n}");
        let mut c = vec![7i32; m * n];
        gemm_u8i8(&a, m, &packed, &mut c);
        assert_eq!(c, expected, "dispatched, m={m} k={k} n={n}");
        for j in 0..n {
            assert_eq!(
                packed.column_sums[j],
                (0..k).map(|t| w[t * n + j] as i32).sum::<i32>()
            );
        }
    }

    #[test]
    fn equals_the_definition_on_odd_sizes_and_extreme_values() {
        let mut rng = Rng::new(11);
        let any_u8 = |r: &mut Rng| (r.next_u64() % 256) as u8;
        let any_i8 = |r: &mut Rng| ((r.next_u64() % 255) as i32 - 127) as i8;
        // Sizes that are and are not multiples of the 4-input group, the 16-output panel,
        // the 4-row block and the 2-panel pair.
        for (m, k, n) in [
            (1, 1, 1),
            (3, 5, 17),
            (4, 4, 16),
            (5, 13, 33),
            (9, 64, 48),
            (7, 784, 10),
            (64, 31, 70),
        ] {
            case(m, k, n, &mut rng, any_u8, any_i8);
        }
        // Saturation corners: the largest products (255·127, 255·−128) summed over 784
        // inputs stay far inside i32, and must come out exact.
        case(6, 784, 40, &mut rng, |_| 255, |_| 127);
        case(6, 784, 40, &mut rng, |_| 255, |_| -128);
        case(5, 9, 20, &mut rng, |_| 0, any_i8);
        case(5, 9, 20, &mut rng, any_u8, |_| 0);
    }
}
