//! Intel AMX (Advanced Matrix Extensions) for the exact integer kernels: whether this CPU and
//! kernel let smelt use the tile registers, and the one tile shape every kernel here uses.
//!
//! Why: an AMX `tdpbsud` multiplies a 16×64 block of signed bytes by a 64×16 block of unsigned
//! bytes into 16×16 exact 32-bit sums — 16,384 multiply-adds, against 64 for a `vpdpbusd`. Integer
//! sums do not depend on their order, so a kernel that forms the same exact integers as ggml's
//! and then applies ggml's f32 operations gives ggml's bits, whichever unit formed them.
//!
//! Linux hands out the tile state only on request (`arch_prctl(ARCH_REQ_XCOMP_PERM,
//! XFEATURE_XTILEDATA)`, once per process), and each thread loads the tile shape (`ldtilecfg`)
//! before its first tile instruction; [`ensure_configured`] does the latter per thread.
//! `SMELT_NO_AMX=1` turns AMX off (to compare the kernels, or on a machine where it misbehaves).

use std::sync::OnceLock;

/// Whether the AMX integer kernels can run here: the CPU has AMX-TILE and AMX-INT8, the kernel
/// granted the tile state, and `SMELT_NO_AMX` is not set.
pub(crate) fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        std::env::var_os("SMELT_NO_AMX").is_none_or(|v| v.is_empty() || v == "0") && request()
    })
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request() -> bool {
    /// `ARCH_REQ_XCOMP_PERM` and `XFEATURE_XTILEDATA` (`asm/prctl.h`, `asm/fpu/types.h`).
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
    let (tile, int8) = (leaf7.edx & (1 << 24) != 0, leaf7.edx & (1 << 25) != 0);
    if !(tile && int8 && std::arch::is_x86_feature_detected!("avx512f")) {
        return false;
    }
    // SAFETY: a plain system call with integer arguments; failure leaves the process unchanged.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn request() -> bool {
    false
}

/// The tile configuration (`ldtilecfg`'s 64-byte operand): palette 1, all eight tiles 16 rows of
/// 64 bytes.
#[cfg(target_arch = "x86_64")]
#[repr(C, align(64))]
struct Config {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

/// Loads the tile shape into this thread's tile configuration if it has not been loaded yet.
///
/// # Safety
/// [`available`] must have returned true.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn ensure_configured() {
    thread_local! {
        static CONFIGURED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if CONFIGURED.get() {
        return;
    }
    let mut config = Config {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        colsb: [0; 16],
        rows: [0; 16],
    };
    for t in 0..8 {
        config.colsb[t] = 64;
        config.rows[t] = 16;
    }
    // SAFETY: the caller checked that AMX is available; the operand is a valid configuration.
    unsafe { std::arch::asm!("ldtilecfg [{0}]", in(reg) &config as *const Config) };
    CONFIGURED.set(true);
}
