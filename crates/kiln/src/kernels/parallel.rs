//! Elementwise loops that split across rayon's threads once the work pays for the handoff.

use rayon::prelude::*;

/// Below this many elements a loop runs on the calling thread. A cheap elementwise pass
/// over 128K floats takes ~30 µs on one core; waking the other worker and joining costs
/// several µs plus a cache migration, so smaller loops stay put. Measured on the reference
/// MLP: a 32K threshold (its 64×512 activations) cost more in futex/yield time than it saved.
pub const PAR_THRESHOLD: usize = 1 << 17;

/// Runs `f` on a rayon worker thread. Called from outside the pool, every parallel loop
/// would otherwise park the caller and wake workers (three threads on two cores); from
/// inside, loops split between the current worker and its idle peer.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    let mut result = None;
    rayon::scope(|_| result = Some(f()));
    result.expect("the scope ran its body")
}
const CHUNK: usize = 1 << 13;

pub fn fill(dst: &mut [f32], value: f32) {
    if dst.len() < PAR_THRESHOLD {
        dst.fill(value);
    } else {
        dst.par_chunks_mut(CHUNK).for_each(|c| c.fill(value));
    }
}

/// `dst[i] = f(src[i])`
pub fn map(dst: &mut [f32], src: &[f32], f: impl Fn(f32) -> f32 + Sync) {
    assert_eq!(dst.len(), src.len());
    let run = |d: &mut [f32], s: &[f32]| d.iter_mut().zip(s).for_each(|(d, &s)| *d = f(s));
    if dst.len() < PAR_THRESHOLD {
        run(dst, src);
    } else {
        dst.par_chunks_mut(CHUNK)
            .zip(src.par_chunks(CHUNK))
            .for_each(|(d, s)| run(d, s));
    }
}

/// `f(dst_chunk, src_chunk)` over aligned chunks: for kernels that vectorize a whole slice.
pub fn map_slices(dst: &mut [f32], src: &[f32], f: impl Fn(&mut [f32], &[f32]) + Sync) {
    assert_eq!(dst.len(), src.len());
    if dst.len() < PAR_THRESHOLD / 4 {
        f(dst, src);
    } else {
        dst.par_chunks_mut(CHUNK)
            .zip(src.par_chunks(CHUNK))
            .for_each(|(d, s)| f(d, s));
    }
}

/// `f(dst_chunk, a_chunk, b_chunk)` over aligned chunks.
pub fn update2_slices(dst: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(&mut [f32], &[f32], &[f32]) + Sync) {
    assert!(dst.len() == a.len() && dst.len() == b.len());
    if dst.len() < PAR_THRESHOLD / 4 {
        f(dst, a, b);
    } else {
        dst.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK))
            .zip(b.par_chunks(CHUNK))
            .for_each(|((d, a), b)| f(d, a, b));
    }
}

/// `dst[i] = f(dst[i], a[i], b[i])`: the shape of most backward rules (accumulate into dst).
pub fn update2(dst: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32, f32, f32) -> f32 + Sync) {
    assert!(dst.len() == a.len() && dst.len() == b.len());
    let run = |d: &mut [f32], a: &[f32], b: &[f32]| {
        for ((d, &a), &b) in d.iter_mut().zip(a).zip(b) {
            *d = f(*d, a, b);
        }
    };
    if dst.len() < PAR_THRESHOLD {
        run(dst, a, b);
    } else {
        dst.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK))
            .zip(b.par_chunks(CHUNK))
            .for_each(|((d, a), b)| run(d, a, b));
    }
}

/// `dst[i] = f(a[i], b[i])`: one pass where a copy then an update would take two.
pub fn map2(dst: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) {
    assert!(dst.len() == a.len() && dst.len() == b.len());
    let run = |d: &mut [f32], a: &[f32], b: &[f32]| {
        for ((d, &a), &b) in d.iter_mut().zip(a).zip(b) {
            *d = f(a, b);
        }
    };
    if dst.len() < PAR_THRESHOLD {
        run(dst, a, b);
    } else {
        dst.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK))
            .zip(b.par_chunks(CHUNK))
            .for_each(|((d, a), b)| run(d, a, b));
    }
}

/// `dst[i] = f(dst[i], a[i])`
pub fn update1(dst: &mut [f32], a: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) {
    assert_eq!(dst.len(), a.len());
    let run = |d: &mut [f32], a: &[f32]| d.iter_mut().zip(a).for_each(|(d, &a)| *d = f(*d, a));
    if dst.len() < PAR_THRESHOLD {
        run(dst, a);
    } else {
        dst.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK))
            .for_each(|(d, a)| run(d, a));
    }
}

/// `dst += alpha · src`
pub fn axpy(dst: &mut [f32], alpha: f32, src: &[f32]) {
    update1(dst, src, |d, s| d + alpha * s);
}

/// Sum in f64 partials so long reductions keep f32 precision.
pub fn sum(values: &[f32]) -> f64 {
    let run = |c: &[f32]| c.iter().map(|&v| v as f64).sum::<f64>();
    if values.len() < PAR_THRESHOLD {
        run(values)
    } else {
        values.par_chunks(CHUNK).map(run).sum()
    }
}

/// Runs `f(row_index, row)` over the rows of a row-major matrix, in parallel when large.
pub fn for_each_row(data: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if width == 0 {
        return;
    }
    if data.len() < PAR_THRESHOLD {
        data.chunks_mut(width).enumerate().for_each(|(i, r)| f(i, r));
    } else {
        data.par_chunks_mut(width).enumerate().for_each(|(i, r)| f(i, r));
    }
}
