//! Helpers every kernel layer shares: loops compiled for the widest SIMD the processor has
//! ([`simd`]), vectorized sums ([`lanes`]), rayon loops that only go parallel where it
//! pays ([`parallel`]), and keeping the pool's other worker awake while training
//! ([`keep_awake`]). Below both `ops` and `optim`, which use them.

pub mod keep_awake;
pub mod lanes;
pub mod parallel;
pub(crate) mod simd;
