//! `smelt distill`: teacher datasets (make, import), a student's KL divergence against one,
//! and distillation training.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use distill::sdd::{Header, Opened, SddReader, SddWriter, Selection};
use eval::kld::BaseReader;
use eval::perplexity::ChunkPlan;
use serde_json::json;

use super::progress;

/// Subcommands of `smelt distill`.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Run a teacher over a text and save its top-k log-probabilities (a .sdd dataset);
    /// an interrupted run continues where it stopped.
    Dataset(DatasetArgs),
    /// Convert a llama.cpp --kl-divergence-base file into a dataset.
    Import(ImportArgs),
    /// A student's KL divergence, Δp, same-top-p and PPL against a dataset (the statistics
    /// and JSON keys of `smelt perplexity --kld`).
    Eval(EvalArgs),
}

/// How many of each position's most likely tokens a dataset keeps.
#[derive(clap::Args, Clone, Copy)]
pub struct SelectionArgs {
    /// Keep at most this many tokens per position.
    #[arg(long, default_value_t = 64)]
    pub top_k: usize,
    /// Stop before top-k once the tokens kept leave at most this probability mass.
    #[arg(long, default_value_t = 0.006)]
    pub max_rest: f32,
}

impl SelectionArgs {
    fn selection(self) -> Result<Selection> {
        if self.top_k == 0 || !(0.0..1.0).contains(&self.max_rest) {
            anyhow::bail!("--top-k must be at least 1 and --max-rest in [0, 1)");
        }
        Ok(Selection {
            top_k: self.top_k,
            max_rest: self.max_rest,
        })
    }
}

/// Arguments of `smelt distill dataset`.
#[derive(clap::Args)]
pub struct DatasetArgs {
    /// Teacher GGUF.
    pub teacher: PathBuf,
    /// Text to run it over (tokenized whole, like llama-perplexity).
    #[arg(short = 'f', long = "file")]
    pub text: PathBuf,
    /// Output dataset.
    #[arg(short = 'o', long)]
    pub output: PathBuf,
    /// Tokens per chunk.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    pub n_ctx: usize,
    /// Use at most this many chunks.
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Tokens kept per position.
    #[command(flatten)]
    pub selection: SelectionArgs,
    /// Threads and output format.
    #[command(flatten)]
    pub run: super::RunOptions,
}

/// Arguments of `smelt distill import`.
#[derive(clap::Args)]
pub struct ImportArgs {
    /// llama.cpp --kl-divergence-base file (or one `smelt perplexity --kld-save` wrote).
    pub base: PathBuf,
    /// The model that made the base: names the dataset's teacher, tokenizer and BOS.
    #[arg(long)]
    pub teacher: PathBuf,
    /// Output dataset.
    #[arg(short = 'o', long)]
    pub output: PathBuf,
    /// Import at most this many chunks.
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Tokens kept per position.
    #[command(flatten)]
    pub selection: SelectionArgs,
    /// Threads and output format.
    #[command(flatten)]
    pub run: super::RunOptions,
}

/// Arguments of `smelt distill eval`.
#[derive(clap::Args)]
pub struct EvalArgs {
    /// Student GGUF.
    pub student: PathBuf,
    /// Teacher dataset.
    pub data: PathBuf,
    /// Compare at most this many chunks.
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Threads and output format.
    #[command(flatten)]
    pub run: super::RunOptions,
}

/// Runs `smelt distill …`.
pub fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Dataset(args) => dataset(args),
        Command::Import(args) => import(args),
        Command::Eval(args) => eval(args),
    }
}

fn dataset(args: DatasetArgs) -> Result<ExitCode> {
    super::set_threads(args.run.threads)?;
    let selection = args.selection.selection()?;
    let t = super::open_tokenized(&args.teacher, &args.text, args.n_ctx, args.chunks)?;
    let header = distill::dataset::header_for_model(
        &t.model,
        &args.teacher,
        &args.text,
        &t.plan,
        selection,
        t.bos,
    )?;
    write_dataset(&args.output, header, args.run.json, |writer, on_chunk| {
        Ok(distill::dataset::write_from_model(
            &t.model, &t.tokens, writer, on_chunk,
        )?)
    })
}

fn import(args: ImportArgs) -> Result<ExitCode> {
    super::set_threads(args.run.threads)?;
    let selection = args.selection.selection()?;
    let mut base = BaseReader::open(&args.base)?;
    let teacher = eval::model::Model::open(&args.teacher)?;
    let tokenizer = eval::tokenizer::Tokenizer::from_gguf(&teacher.file().metadata, &args.teacher)?;
    let n_chunks = args.chunks.unwrap_or(usize::MAX).min(base.n_chunks);
    let header = distill::dataset::header_for_base(
        &base,
        &args.base,
        &teacher,
        &args.teacher,
        n_chunks,
        selection,
        tokenizer.bos_to_add(),
    )?;
    write_dataset(&args.output, header, args.run.json, |writer, on_chunk| {
        Ok(distill::dataset::write_from_base(
            &mut base, writer, on_chunk,
        )?)
    })
}

/// Opens (or continues) the dataset at `path` and lets `fill` append the missing chunks, with
/// a progress bar; reports the finished file.
fn write_dataset(
    path: &Path,
    header: Header,
    json: bool,
    fill: impl FnOnce(&mut SddWriter, &mut dyn FnMut(usize)) -> Result<()>,
) -> Result<ExitCode> {
    let align = ChunkPlan::batched(header.n_ctx as usize, 1).n_seq;
    let resumed_from = match SddWriter::open(path, header.clone(), align)? {
        Opened::Complete => None,
        Opened::Writing(mut writer) => {
            let done = writer.chunks_done();
            let bar = progress::tokens(
                header.n_chunks as u64 * header.n_ctx as u64,
                "teacher dataset",
            );
            bar.inc(done as u64 * header.n_ctx as u64);
            fill(&mut writer, &mut |_| bar.inc(header.n_ctx as u64))?;
            bar.finish_and_clear();
            writer.finish()?;
            Some(done)
        }
    };
    let bytes = std::fs::metadata(path)?.len();
    let rows = header.n_chunks as u64 * header.rows_per_chunk() as u64;
    if json {
        let out = json!({
            "path": path,
            "n_chunks": header.n_chunks,
            "n_ctx": header.n_ctx,
            "n_rows": rows,
            "top_k": header.top_k,
            "max_rest": header.max_rest,
            "bytes": bytes,
            "bytes_per_row": bytes as f64 / rows as f64,
            "resumed_from_chunk": resumed_from,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        match resumed_from {
            None => println!("{}: already complete", path.display()),
            Some(0) => {}
            Some(done) => println!("continued after chunk {done}"),
        }
        println!(
            "{}: {} chunks of {} tokens, {} rows, {} bytes ({:.1} bytes per row)",
            path.display(),
            header.n_chunks,
            header.n_ctx,
            rows,
            bytes,
            bytes as f64 / rows as f64
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn eval(args: EvalArgs) -> Result<ExitCode> {
    super::set_threads(args.run.threads)?;
    let mut reader = SddReader::open(&args.data)?;
    let model = eval::model::Model::open(&args.student)?;
    distill::compare::check_student(&model, &args.student, reader.header())?;
    let header = reader.header().clone();
    let n_chunks = (header.n_chunks as usize).min(args.chunks.unwrap_or(usize::MAX));
    super::perplexity::report_kld(args.run.json, header.n_ctx as usize, n_chunks, |on_chunk| {
        Ok(distill::compare::compare_with_dataset(
            &model,
            &mut reader,
            args.chunks,
            on_chunk,
        )?)
    })?;
    Ok(ExitCode::SUCCESS)
}
