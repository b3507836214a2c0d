//! `smelt distill`: teacher datasets (make, import), a student's KL divergence against one,
//! and distillation training.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use distill::sdd::{Header, Opened, SddReader, SddWriter, Selection};
use eval::perplexity::ChunkPlan;
use formats::kld_base::BaseReader;
use serde_json::json;

use release::progress;

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
    /// Train a student's float tensors to match teacher datasets (AdamW on forward KL over the
    /// teacher's kept tokens, plus optional cross-entropy); checkpoints, --resume.
    Train(TrainArgs),
}

/// Arguments of `smelt distill train`.
#[derive(clap::Args)]
pub struct TrainArgs {
    /// Teacher dataset(s) to train on (repeat the flag for several).
    #[arg(long = "teacher-data", required = true)]
    pub teacher_data: Vec<PathBuf>,
    /// Student: a float GGUF (quantized tensors stay frozen) or a checkpoint folder.
    #[arg(long)]
    pub student: PathBuf,
    /// Output GGUF (same metadata and tensor types as the student).
    #[arg(short = 'o', long)]
    pub output: PathBuf,
    /// Optimizer steps.
    #[arg(long, default_value_t = 300)]
    pub steps: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f32,
    /// Chunks per step.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Weight of the cross-entropy with the text's next token (0: KL only).
    #[arg(long, default_value_t = 0.0)]
    pub ce_weight: f32,
    /// AdamW weight decay on matrices.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    /// Seed of the chunk order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Save a checkpoint (OUTPUT.ckpt) every this many steps.
    #[arg(long, default_value_t = 50)]
    pub checkpoint_every: usize,
    /// Continue from OUTPUT.ckpt.
    #[arg(long)]
    pub resume: bool,
    /// Stop early (checkpoint and output written) after this many seconds.
    #[arg(long)]
    pub time_limit: Option<f64>,
    /// Held-out teacher dataset whose mean KL is reported along the way.
    #[arg(long)]
    pub eval_data: Option<PathBuf>,
    /// Report the held-out KL every this many steps.
    #[arg(long, default_value_t = 25)]
    pub eval_every: usize,
    /// Held-out chunks used for it.
    #[arg(long, default_value_t = 8)]
    pub eval_chunks: usize,
    /// Threads and output format.
    #[command(flatten)]
    pub run: super::RunOptions,
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
    /// Tokens drawn from the rest of each position's distribution, per unit of its mass, where
    /// top-k left more than --max-rest (so KL measured against the dataset is an unbiased
    /// estimate; 0: the rest is only lumped, which under-estimates KL).
    #[arg(long, default_value_t = 2048)]
    pub tail_samples: u32,
}

impl SelectionArgs {
    fn selection(self) -> Result<Selection> {
        if self.top_k == 0 || !(0.0..1.0).contains(&self.max_rest) {
            anyhow::bail!("--top-k must be at least 1 and --max-rest in [0, 1)");
        }
        if self.tail_samples > distill::sdd::MAX_TAIL {
            anyhow::bail!("--tail-samples must be at most {}", distill::sdd::MAX_TAIL);
        }
        Ok(Selection {
            top_k: self.top_k,
            max_rest: self.max_rest,
            tail: self.tail_samples,
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
        Command::Train(args) => train(args),
    }
}

fn dataset(args: DatasetArgs) -> Result<ExitCode> {
    super::set_threads(args.run.threads)?;
    let selection = args.selection.selection()?;
    let t = eval::text::open_tokenized(&args.teacher, &args.text, args.n_ctx, args.chunks)?;
    let header =
        distill::dataset::header_for_model(&t.model, &args.text, &t.plan, selection, t.bos)?;
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
            "tail_samples": header.tail,
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

fn train(args: TrainArgs) -> Result<ExitCode> {
    use distill::train::run::{self, Progress, Schedule};
    use distill::train::{self, checkpoint, student::Objective, AdamW, Settings, TrainingData};
    super::set_threads(args.run.threads)?;
    let intervals = [
        args.steps,
        args.batch,
        args.checkpoint_every,
        args.eval_every,
    ];
    if intervals.contains(&0) || args.lr.is_nan() || args.lr <= 0.0 {
        anyhow::bail!(
            "--steps, --batch, --checkpoint-every, --eval-every and --lr must be positive"
        );
    }
    let paths: Vec<&Path> = args.teacher_data.iter().map(PathBuf::as_path).collect();
    let (data, header) = TrainingData::load(&paths)?;
    let source = release::convert::gguf_of(&args.student, &args.output)?;
    let model = eval::model::Model::open(source.path())?;
    distill::compare::check_student(&model, &args.student, &header)?;
    let held_out = match &args.eval_data {
        Some(p) => {
            let (d, h) = TrainingData::load(&[p.as_path()])?;
            distill::compare::check_student(&model, &args.student, &h)?;
            Some(d)
        }
        None => None,
    };
    let mut student = train::student::Student::from_model(&model)?;
    let ckpt = {
        let mut name = args.output.file_name().unwrap_or_default().to_os_string();
        name.push(".ckpt");
        args.output.with_file_name(name)
    };
    let mut adam = if args.resume {
        checkpoint::load(&ckpt, &mut student)?
    } else {
        AdamW::new(&student)
    };
    let settings = Settings {
        steps: args.steps,
        lr: args.lr,
        batch: args.batch,
        weight_decay: args.weight_decay,
        objective: Objective {
            ce_weight: args.ce_weight,
        },
        seed: args.seed,
    };
    let schedule = Schedule {
        checkpoint_every: args.checkpoint_every,
        eval_every: args.eval_every,
        eval_chunks: args.eval_chunks,
        time_limit: args.time_limit,
    };
    let bar = progress::steps(args.steps as u64, "distill");
    bar.set_position(adam.step as u64);
    let outcome = run::run(
        &mut student,
        &mut adam,
        &data,
        held_out.as_ref(),
        &settings,
        &schedule,
        &ckpt,
        |p| match p {
            Progress::Step {
                step,
                kl,
                tokens_per_s,
            } => {
                bar.set_position(step as u64);
                bar.set_message(format!("KL {kl:.4} {tokens_per_s:.0} tok/s"));
            }
            Progress::Point(point) if !args.run.json => bar.suspend(|| {
                println!(
                    "step {:5}  train KL {}  held-out KL {}  {:.0} s",
                    point.step,
                    point.train_kl.map_or("-".into(), |v| format!("{v:.5}")),
                    point.heldout_kl.map_or("-".into(), |v| format!("{v:.5}")),
                    point.seconds
                )
            }),
            Progress::Point(_) => {}
        },
    )?;
    bar.finish_and_clear();
    train::write_student(&student, model.file(), &args.output)?;
    let (seconds, tokens) = (outcome.seconds, outcome.tokens);
    if args.run.json {
        let curve: Vec<_> = outcome
            .curve
            .iter()
            .map(|p| {
                json!({
                    "step": p.step,
                    "train_kl": p.train_kl,
                    "heldout_kl": p.heldout_kl,
                    "seconds": p.seconds,
                })
            })
            .collect();
        let out = json!({
            "output": args.output,
            "steps": outcome.steps,
            "seconds": seconds,
            "tokens_per_s": tokens as f64 / seconds,
            "curve": curve,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{}: {} steps in {:.0} s ({:.0} tokens/s); checkpoint {}",
            args.output.display(),
            outcome.steps,
            seconds,
            tokens as f64 / seconds,
            ckpt.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
