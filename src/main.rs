//! `smelt`: turn full-precision checkpoints into small, validated GGUF releases.
//!
//! The binary wires the crates together — `formats` reads and writes files, `quantize` encodes
//! and prunes numbers, `eval` runs models — in one module per subcommand (`cmd`); the release
//! job's orchestration (recipe, content cache, gates, reports) is `release`.
//! Exit codes: 0 success, 1 a quality gate failed, 2 bad input.

#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

mod cmd;

/// mimalloc keeps freed pages for reuse: the forward pass allocates and frees large activation
/// buffers every layer, which with the system allocator meant a page fault per 4 KiB each time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay`'s place in mimalloc's `mi_option_e` (the same in its versions 2 and 3).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

extern "C" {
    /// mimalloc's run-time option setter (part of the linked allocator).
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// Tells mimalloc never to hand freed memory back to the kernel. By default it does so 10 ms
/// after a free, and the next pass's buffers then come back as fresh pages the kernel must clear:
/// 24,700 page faults and 13 % of a perplexity run's time on a 110M model; 4,400 without purging.
/// The memory stays counted in the peak RSS either way (the peak is the working set).
fn keep_freed_memory() {
    // SAFETY: a plain option store; the value −1 means "never purge".
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// `PR_SET_THP_DISABLE` (`linux/prctl.h`).
#[cfg(target_os = "linux")]
const PR_SET_THP_DISABLE: std::ffi::c_int = 41;

#[cfg(target_os = "linux")]
extern "C" {
    /// Linux's process control call (libc).
    fn prctl(option: std::ffi::c_int, ...) -> std::ffi::c_int;
}

/// Turns transparent huge pages off for this process. Where the kernel backs anonymous memory
/// with 2 MiB pages on first touch (`transparent_hugepage=always`), every fresh heap region the
/// forward pass grows into was cleared 2 MiB at a time: 12 % of a perplexity run on a 147M Gemma 3
/// (`clear_page_erms`), 7–8 % more tokens/s without. Weights are file mappings, which this does
/// not touch.
fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with an integer option and integer arguments; failure leaves THP as it was.
    unsafe {
        prctl(
            PR_SET_THP_DISABLE,
            1 as std::ffi::c_ulong,
            0 as std::ffi::c_ulong,
            0 as std::ffi::c_ulong,
            0 as std::ffi::c_ulong,
        );
    }
}

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Command-line interface.
#[derive(Parser)]
#[command(
    name = "smelt",
    version,
    about = "Turn full-precision checkpoints into small, validated GGUF releases"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert a Hugging Face checkpoint folder to GGUF (like llama.cpp's convert_hf_to_gguf.py).
    Convert(cmd::convert::Args),
    /// Quantize a GGUF file or a checkpoint folder (like llama-quantize).
    Quantize(cmd::quantize::Args),
    /// List the tensor types and file types smelt knows.
    Types(cmd::types::Args),
    /// List the model architectures smelt runs and the stages that take each.
    Archs(cmd::archs::Args),
    /// Perplexity and KL divergence of a GGUF model on a text (like llama-perplexity).
    Perplexity(cmd::perplexity::Args),
    /// Teacher datasets, KL divergence against them, and distillation training.
    #[command(subcommand)]
    Distill(cmd::distill::Command),
    /// Collect an importance matrix over a text (like llama-imatrix).
    Imatrix(cmd::imatrix::Args),
    /// Prune layers, FFN channels, heads or weights (magnitude, Wanda, N:M) of a float model.
    Prune(cmd::prune::Args),
    /// Quantize, evaluate and gate a whole release from a recipe (TOML).
    Release(cmd::release::Args),
    /// The release job end to end on a small random checkpoint (no download needed).
    Demo(cmd::demo::Args),
    /// Show the metadata and tensor table of a GGUF file or a checkpoint folder.
    Inspect(cmd::inspect::Args),
    /// Developer helpers: synthetic checkpoints for tests and benchmarks.
    Dev(cmd::dev::Args),
}

fn main() -> ExitCode {
    keep_freed_memory();
    no_huge_pages();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Convert(args) => cmd::convert::run(args),
        Command::Inspect(args) => cmd::inspect::run(args),
        Command::Quantize(args) => cmd::quantize::run(args),
        Command::Types(args) => cmd::types::run(args),
        Command::Archs(args) => cmd::archs::run(args),
        Command::Perplexity(args) => cmd::perplexity::run(args),
        Command::Imatrix(args) => cmd::imatrix::run(args),
        Command::Distill(command) => cmd::distill::run(command),
        Command::Prune(args) => cmd::prune::run(args),
        Command::Release(args) => cmd::release::run(args),
        Command::Demo(args) => cmd::demo::run(args),
        Command::Dev(args) => cmd::dev::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("smelt: error: {}", one_line(&format!("{err:#}")));
            ExitCode::from(2)
        }
    }
}

/// Errors are printed on one line so that CI logs and scripts can grep them.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `smelt inspect … | head` closes the pipe early; that is not an error.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}
