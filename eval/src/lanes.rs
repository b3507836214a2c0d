//! Sixteen f32 lanes — one AVX-512 register, two AVX2 registers or a plain array — and
//! [`dispatch`], which runs a kernel written once over [`Lanes16`] with the widest form the CPU
//! has. Every operation is lane-wise and exactly rounded (no reassociation), so the three forms
//! compute the same bits: the exact-order kernels (ggml's summation orders) hold on every machine.

/// Lanes per value: one AVX-512 register of f32, ggml's `GGML_F32_EPR` there.
pub(crate) const LANES: usize = 16;

/// 16 f32 lanes and the lane-wise operations the kernels use.
pub(crate) trait Lanes16: Copy {
    /// Activation rows a 4-row GEMM tile keeps in registers with these lanes (`float_gemm`).
    const TILE_COLS: usize;
    /// All lanes 0.
    fn zero() -> Self;
    /// All lanes `v`.
    fn splat(v: f32) -> Self;
    /// Loads 16 f32 values.
    ///
    /// # Safety
    /// `p..p+16` must be readable and the CPU must have the lanes' features.
    unsafe fn load_f32(p: *const f32) -> Self;
    /// Loads 16 f16 bit patterns as f32 (exact).
    ///
    /// # Safety
    /// As [`Lanes16::load_f32`].
    unsafe fn load_f16(p: *const u16) -> Self;
    /// `a · b + c` per lane, rounded once.
    fn fma(a: Self, b: Self, c: Self) -> Self;
    /// `a + b` per lane.
    fn add(a: Self, b: Self) -> Self;
    /// `a · b` per lane.
    fn mul(a: Self, b: Self) -> Self;
    /// The lanes as an array.
    fn to_array(self) -> [f32; LANES];
}

/// A computation written once over [`Lanes16`], run by [`dispatch`]; it leaves its results in
/// buffers it borrows.
pub(crate) trait LaneKernel {
    /// Runs with lanes `L` (inlined into [`dispatch`]'s per-CPU compilations).
    fn run<L: Lanes16>(&mut self);
}

/// The widest lane form this CPU runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cpu {
    /// AVX-512F (which implies AVX2, FMA and F16C).
    Avx512,
    /// AVX2 with FMA and F16C.
    Avx2,
    /// Anything else: plain arrays, `mul_add` through libm.
    Portable,
}

/// Detects [`Cpu`] (the standard library caches the CPUID reads).
pub(crate) fn cpu() -> Cpu {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Cpu::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
        {
            return Cpu::Avx2;
        }
    }
    Cpu::Portable
}

/// Clears the upper halves of the vector registers (`vzeroupper`) after code that may leave
/// them dirty without doing so itself (faer's kernels): until then, each switch between
/// legacy-SSE code (everything compiled for plain x86-64, libm's entry points) and VEX code
/// stalls. A no-op on CPUs without AVX.
pub(crate) fn clean_upper_state() {
    #[cfg(target_arch = "x86_64")]
    if cpu() != Cpu::Portable {
        #[target_feature(enable = "avx")]
        unsafe fn zero_upper() {
            std::arch::x86_64::_mm256_zeroupper()
        }
        // SAFETY: the CPU has AVX (AVX2 or AVX-512F was detected).
        unsafe { zero_upper() }
    }
}

/// Whether this CPU has AVX-512F and AVX512-VNNI (the integer kernels' `vpdpbusd`).
pub(crate) fn has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Runs `kernel` with the lanes of [`cpu`].
pub(crate) fn dispatch<K: LaneKernel>(mut kernel: K) {
    match cpu() {
        // SAFETY: `cpu()` found AVX-512F.
        #[cfg(target_arch = "x86_64")]
        Cpu::Avx512 => unsafe { x86::run_avx512(&mut kernel) },
        // SAFETY: `cpu()` found AVX2, FMA and F16C.
        #[cfg(target_arch = "x86_64")]
        Cpu::Avx2 => unsafe { x86::run_avx2(&mut kernel) },
        _ => kernel.run::<Portable>(),
    }
}

/// Defines a function whose scalar body is compiled once per [`Cpu`] form with that form's
/// features enabled and picked at run time, so that its loops vectorize and `mul_add` is one
/// instruction instead of a libm call. The body must not reassociate anything itself; the
/// compilations then agree bit for bit. (A closure run through [`dispatch`] would not do: it
/// stays a separate function, compiled without the features.)
macro_rules! dispatched {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$attr])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn portable($($arg: $ty),*) $(-> $ret)? $body
            match $crate::lanes::cpu() {
                #[cfg(target_arch = "x86_64")]
                $crate::lanes::Cpu::Avx512 => {
                    #[target_feature(enable = "avx512f")]
                    #[allow(clippy::too_many_arguments)]
                    unsafe fn wide($($arg: $ty),*) $(-> $ret)? {
                        portable($($arg),*)
                    }
                    // SAFETY: the CPU has AVX-512F.
                    unsafe { wide($($arg),*) }
                }
                #[cfg(target_arch = "x86_64")]
                $crate::lanes::Cpu::Avx2 => {
                    #[target_feature(enable = "avx2,fma,f16c")]
                    #[allow(clippy::too_many_arguments)]
                    unsafe fn narrow($($arg: $ty),*) $(-> $ret)? {
                        portable($($arg),*)
                    }
                    // SAFETY: the CPU has AVX2, FMA and F16C.
                    unsafe { narrow($($arg),*) }
                }
                _ => portable($($arg),*),
            }
        }
    };
}
pub(crate) use dispatched;

/// The portable lanes: plain arrays and `mul_add`.
#[derive(Clone, Copy)]
pub(crate) struct Portable([f32; LANES]);

impl Lanes16 for Portable {
    const TILE_COLS: usize = 1;
    #[inline(always)]
    fn zero() -> Self {
        Portable([0.0; LANES])
    }
    #[inline(always)]
    fn splat(v: f32) -> Self {
        Portable([v; LANES])
    }
    #[inline(always)]
    unsafe fn load_f32(p: *const f32) -> Self {
        // SAFETY: the caller guarantees `p` is valid for 16 reads (this fn's contract).
        Portable(std::array::from_fn(|i| unsafe { *p.add(i) }))
    }
    #[inline(always)]
    unsafe fn load_f16(p: *const u16) -> Self {
        Portable(std::array::from_fn(|i| {
            // SAFETY: the caller guarantees `p` is valid for 16 reads (this fn's contract).
            half::f16::from_bits(unsafe { *p.add(i) }).to_f32()
        }))
    }
    #[inline(always)]
    fn fma(a: Self, b: Self, c: Self) -> Self {
        Portable(std::array::from_fn(|i| a.0[i].mul_add(b.0[i], c.0[i])))
    }
    #[inline(always)]
    fn add(a: Self, b: Self) -> Self {
        Portable(std::array::from_fn(|i| a.0[i] + b.0[i]))
    }
    #[inline(always)]
    fn mul(a: Self, b: Self) -> Self {
        Portable(std::array::from_fn(|i| a.0[i] * b.0[i]))
    }
    #[inline(always)]
    fn to_array(self) -> [f32; LANES] {
        self.0
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The lanes as AVX-512 and AVX2 registers, and the per-CPU compilations of a kernel.

    use std::arch::x86_64::*;

    use super::{LaneKernel, Lanes16, LANES};

    /// `kernel` compiled for AVX-512F.
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn run_avx512<K: LaneKernel>(kernel: &mut K) {
        kernel.run::<Avx512>()
    }

    /// `kernel` compiled for AVX2, FMA and F16C.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn run_avx2<K: LaneKernel>(kernel: &mut K) {
        kernel.run::<Avx2>()
    }

    #[derive(Clone, Copy)]
    pub(super) struct Avx512(__m512);

    // SAFETY (all methods): only instantiated inside `run_avx512`, so the CPU has AVX-512F.
    impl Lanes16 for Avx512 {
        const TILE_COLS: usize = 6;
        #[inline(always)]
        fn zero() -> Self {
            // SAFETY: register arithmetic only; the CPU has the feature (see the impl).
            Avx512(unsafe { _mm512_setzero_ps() })
        }
        #[inline(always)]
        fn splat(v: f32) -> Self {
            // SAFETY: register arithmetic only; the CPU has the feature (see the impl).
            Avx512(unsafe { _mm512_set1_ps(v) })
        }
        #[inline(always)]
        unsafe fn load_f32(p: *const f32) -> Self {
            Avx512(_mm512_loadu_ps(p))
        }
        #[inline(always)]
        unsafe fn load_f16(p: *const u16) -> Self {
            Avx512(_mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)))
        }
        #[inline(always)]
        fn fma(a: Self, b: Self, c: Self) -> Self {
            // SAFETY: register arithmetic only; the CPU has the feature (see the impl).
            Avx512(unsafe { _mm512_fmadd_ps(a.0, b.0, c.0) })
        }
        #[inline(always)]
        fn add(a: Self, b: Self) -> Self {
            // SAFETY: register arithmetic only; the CPU has the feature (see the impl).
            Avx512(unsafe { _mm512_add_ps(a.0, b.0) })
        }
        #[inline(always)]
        fn mul(a: Self, b: Self) -> Self {
            // SAFETY: register arithmetic only; the CPU has the feature (see the impl).
            Avx512(unsafe { _mm512_mul_ps(a.0, b.0) })
        }
        #[inline(always)]
        fn to_array(self) -> [f32; LANES] {
            // SAFETY: __m512 and [f32; 16] have the same size and any bits are valid.
            unsafe { std::mem::transmute(self.0) }
        }
    }

    #[derive(Clone, Copy)]
    pub(super) struct Avx2(__m256, __m256);

    // SAFETY (all methods): only instantiated inside `run_avx2`, so the CPU has AVX2/FMA/F16C.
    impl Lanes16 for Avx2 {
        const TILE_COLS: usize = 2;
        #[inline(always)]
        fn zero() -> Self {
            // SAFETY: register arithmetic only; the CPU has the feature (see the impl).
            unsafe { Avx2(_mm256_setzero_ps(), _mm256_setzero_ps()) }
        }
        #[inline(always)]
        fn splat(v: f32) -> Self {
            // SAFETY: register arithmetic only; the CPU has the feature (see the impl).
            unsafe { Avx2(_mm256_set1_ps(v), _mm256_set1_ps(v)) }
        }
        #[inline(always)]
        unsafe fn load_f32(p: *const f32) -> Self {
            Avx2(_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)))
        }
        #[inline(always)]
        unsafe fn load_f16(p: *const u16) -> Self {
            let p = p as *const __m128i;
            Avx2(
                _mm256_cvtph_ps(_mm_loadu_si128(p)),
                _mm256_cvtph_ps(_mm_loadu_si128(p.add(1))),
            )
        }
        #[inline(always)]
        fn fma(a: Self, b: Self, c: Self) -> Self {
            // SAFETY: register arithmetic only; the CPU has the feature (see the impl).
            unsafe {
                Avx2(
                    _mm256_fmadd_ps(a.0, b.0, c.0),
                    _mm256_fmadd_ps(a.1, b.1, c.1),
                )
            }
        }
        #[inline(always)]
        fn add(a: Self, b: Self) -> Self {
            // SAFETY: register arithmetic only; the CPU has the feature (see the impl).
            unsafe { Avx2(_mm256_add_ps(a.0, b.0), _mm256_add_ps(a.1, b.1)) }
        }
        #[inline(always)]
        fn mul(a: Self, b: Self) -> Self {
            // SAFETY: register arithmetic only; the CPU has the feature (see the impl).
            unsafe { Avx2(_mm256_mul_ps(a.0, b.0), _mm256_mul_ps(a.1, b.1)) }
        }
        #[inline(always)]
        fn to_array(self) -> [f32; LANES] {
            // SAFETY: two __m256 are 16 f32 and any bits are valid.
            unsafe { std::mem::transmute((self.0, self.1)) }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! Runs a kernel with every lane form this machine has, for tests that compare them.

    use super::*;

    /// Runs `kernel` with each lane form available here (portable always, AVX2 and AVX-512 when
    /// the CPU has them) and returns what `read` takes from it after each run, labelled.
    pub(crate) fn each_form<K: LaneKernel>(
        kernel: &mut K,
        read: impl Fn(&K) -> Vec<f32>,
    ) -> Vec<(&'static str, Vec<f32>)> {
        kernel.run::<Portable>();
        let mut runs = vec![("portable", read(kernel))];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
            {
                // SAFETY: the CPU has AVX2, FMA and F16C (checked above).
                unsafe { x86::run_avx2(kernel) };
                runs.push(("avx2", read(kernel)));
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F (checked above).
                unsafe { x86::run_avx512(kernel) };
                runs.push(("avx512", read(kernel)));
            }
        }
        runs
    }
}
