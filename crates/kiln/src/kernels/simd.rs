//! Run-time choice of the widest vector instructions the CPU has.
//!
//! kiln is built for the baseline x86-64 target (SSE2), so it runs on any x86-64 machine;
//! a loop that matters is compiled again for AVX-512 and AVX2 and the copy the CPU supports
//! is called. The copies differ only in vector width: Rust never fuses `a·b + c` into one
//! rounding on its own, and explicit `mul_add`s round the same in hardware as in software,
//! so every path gives the same bits.

/// `widest_simd!(fn name[<F: Bound>](args…) [-> ret] => body);` defines `name`, which
/// calls `body` (an `#[inline(always)]` function with the same arguments) compiled for
/// AVX-512F, else for AVX2 with FMA, else for the baseline target. Closures built inside
/// `body` are compiled on their own, without these features: write the hot loop in `body`
/// itself (a closure passed in through a generic parameter is inlined into it).
macro_rules! widest_simd {
    ($(#[$meta:meta])* $vis:vis fn $name:ident $(<$gen:ident: $bound:path>)?
        ($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? => $body:path) => {
        $(#[$meta])*
        $vis fn $name $(<$gen: $bound>)? ($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512 $(<$gen: $bound>)? ($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2 $(<$gen: $bound>)? ($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F, checked just above.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has AVX2 and FMA, checked just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

pub(crate) use widest_simd;
