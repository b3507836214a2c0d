//! A whole training run: optimizer steps until the planned number or a time limit, the held-out
//! KL measured every few steps (the learning curve), a checkpoint every few steps and at the end,
//! so that `--resume` continues it to the same bytes.

use std::path::Path;
use std::time::Instant;

use formats::Result;

use super::student::Student;
use super::{checkpoint, mean_kl, train_step, AdamW, Settings, TrainingData};

/// When to measure, checkpoint and stop, besides the steps of [`Settings`].
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Save a checkpoint every this many steps (and at the end).
    pub checkpoint_every: usize,
    /// Measure the held-out KL every this many steps (and at the end).
    pub eval_every: usize,
    /// Held-out chunks used for it.
    pub eval_chunks: usize,
    /// Stop (checkpointed) once this many seconds have passed.
    pub time_limit: Option<f64>,
}

/// One point of the learning curve.
#[derive(Debug, Clone, Copy)]
pub struct CurvePoint {
    /// Steps done.
    pub step: usize,
    /// Mean KL of the last step's batch (none before the first step).
    pub train_kl: Option<f64>,
    /// Mean KL over the held-out data, if there is any.
    pub heldout_kl: Option<f64>,
    /// Seconds since the run started.
    pub seconds: f64,
}

/// What a run reports as it goes.
pub enum Progress<'a> {
    /// A step finished: its index + 1, its batch's KL and the tokens per second so far.
    Step {
        /// Steps done.
        step: usize,
        /// Mean KL of its batch.
        kl: f64,
        /// Tokens per second over the run so far.
        tokens_per_s: f64,
    },
    /// A new point of the learning curve.
    Point(&'a CurvePoint),
}

/// What a finished (or timed-out) run did.
pub struct Outcome {
    /// Steps done in all (a resumed run counts the earlier ones).
    pub steps: usize,
    /// Seconds this run took.
    pub seconds: f64,
    /// Tokens this run trained on.
    pub tokens: usize,
    /// The learning curve.
    pub curve: Vec<CurvePoint>,
}

/// Trains `student` from `adam`'s step to `settings.steps`, checkpointing to `ckpt`; `progress`
/// sees every step and curve point.
#[allow(clippy::too_many_arguments)]
pub fn run(
    student: &mut Student,
    adam: &mut AdamW,
    data: &TrainingData,
    held_out: Option<&TrainingData>,
    settings: &Settings,
    schedule: &Schedule,
    ckpt: &Path,
    mut progress: impl FnMut(Progress),
) -> Result<Outcome> {
    let started = Instant::now();
    let mut curve = Vec::new();
    let mut record = |step: usize,
                      train_kl: Option<f64>,
                      student: &Student,
                      progress: &mut dyn FnMut(Progress)| {
        let point = CurvePoint {
            step,
            train_kl,
            heldout_kl: held_out.map(|d| mean_kl(student, d, schedule.eval_chunks)),
            seconds: started.elapsed().as_secs_f64(),
        };
        progress(Progress::Point(&point));
        curve.push(point);
    };
    record(adam.step, None, student, &mut progress);
    let mut tokens = 0usize;
    while adam.step < settings.steps {
        let report = train_step(student, adam, data, settings);
        tokens += report.tokens;
        progress(Progress::Step {
            step: adam.step,
            kl: report.kl,
            tokens_per_s: tokens as f64 / started.elapsed().as_secs_f64(),
        });
        let out_of_time = schedule
            .time_limit
            .is_some_and(|l| started.elapsed().as_secs_f64() > l);
        let last = adam.step == settings.steps || out_of_time;
        if adam.step.is_multiple_of(schedule.eval_every) || last {
            record(adam.step, Some(report.kl), student, &mut progress);
        }
        if adam.step.is_multiple_of(schedule.checkpoint_every) || last {
            checkpoint::save(ckpt, student, adam)?;
        }
        if out_of_time {
            break;
        }
    }
    Ok(Outcome {
        steps: adam.step,
        seconds: started.elapsed().as_secs_f64(),
        tokens,
        curve,
    })
}
