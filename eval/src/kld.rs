//! KL divergence against a base model, in llama-perplexity's terms: the base run saves each scored
//! position's log-probabilities (`--kl-divergence-base` file: 16-bit codes over the last 16 nats
//! of range), and a later run of another model over the same tokens compares its distributions
//! with them — mean/percentile KLD, the PPL ratio, Δp of the correct token and "same top p".

use formats::kld_base::{row_slots, scale_and_min, BaseReader};
use formats::{FormatError, Result};
use rayon::prelude::*;

use crate::fastmath::{for_each_exp, sum_exp_shifted};
use crate::model::Model;
use crate::perplexity::{run_chunks, ChunkPlan, PerplexityStats};

/// What one scored position contributes (llama.cpp's per-token `log_softmax` against a base);
/// computed here from a llama.cpp base row, or by `distill` from a teacher dataset row.
#[derive(Debug, Clone, Copy)]
pub struct TokenComparison {
    /// −ln p of the target under the model.
    pub nll: f32,
    /// −ln p of the target under the base.
    pub nll_base: f32,
    /// KL(base ‖ model) at this position (or an estimate of it).
    pub kld: f64,
    /// The variance of that estimate (0 when it is exact).
    pub kld_variance: f64,
    /// p(target) under the model minus under the base.
    pub p_diff: f32,
    /// Whether both rank the same token first.
    pub same_top: bool,
}

fn compare_row(logits: &[f32], base: &[u16], target: u32) -> TokenComparison {
    let (mut max, mut imax) = (logits[0], 0);
    for (i, &v) in logits.iter().enumerate().skip(1) {
        if v > max {
            max = v;
            imax = i;
        }
    }
    let log_sum = sum_exp_shifted(logits, max).ln() as f32;
    let (scale, min_log_prob) = scale_and_min(base);
    let codes = &base[4..4 + logits.len()];
    let nll = max + log_sum - logits[target as usize];
    let nll_base = -(scale * codes[target as usize] as f32 + min_log_prob);
    let shifted_max = max + log_sum;
    let mut kld = 0.0f64;
    let (mut imax_base, mut best) = (0, 0.0f32);
    let p_log_base = |i: usize| scale * codes[i] as f32 + min_log_prob;
    for_each_exp(codes.len(), p_log_base, |i, p_base| {
        let lp = p_log_base(i);
        if i == 0 || lp > best {
            best = lp;
            imax_base = i;
        }
        if lp > -16.0 {
            kld += (p_base * (lp - logits[i] + shifted_max)) as f64;
        }
    });
    TokenComparison {
        nll,
        nll_base,
        kld,
        kld_variance: 0.0,
        p_diff: (-nll).exp() - (-nll_base).exp(),
        same_top: imax == imax_base,
    }
}

/// Accumulated comparison of a model with its base (llama.cpp's `kl_divergence_result` plus
/// the per-token values its percentiles need).
#[derive(Debug, Default, Clone)]
pub struct KldStats {
    sum_nll: f64,
    sum_nll2: f64,
    sum_nll_base: f64,
    sum_nll_base2: f64,
    sum_nll_nll_base: f64,
    sum_kld: f64,
    sum_kld2: f64,
    sum_kld_variance: f64,
    sum_p_diff: f64,
    sum_p_diff2: f64,
    sum_p_diff4: f64,
    n_same_top: usize,
    kld_values: Vec<f32>,
    p_diff_values: Vec<f32>,
}

/// Mean and its standard error (llama.cpp's `mean_and_uncertainty`).
fn mean_and_uncertainty(sum: f64, sum2: f64, count: usize) -> (f64, f64) {
    if count < 1 {
        return (0.0, 0.0);
    }
    let f = sum / count as f64;
    let df = sum2 / count as f64 - f * f;
    let df = if df > 0.0 && count > 10 {
        (df / (count - 1) as f64).sqrt()
    } else {
        0.0
    };
    (f, df)
}

/// Linear-interpolated percentile of sorted values (llama.cpp's lambda).
fn percentile(sorted: &[f32], fraction: f32) -> f32 {
    if fraction <= 0.0 {
        return sorted[0];
    }
    if fraction >= 1.0 {
        return sorted[sorted.len() - 1];
    }
    let p = fraction * (sorted.len() - 1) as f32;
    let ip = p as usize;
    let p = p - ip as f32;
    (1.0 - p) * sorted[ip] + p * sorted[(ip + 1).min(sorted.len() - 1)]
}

fn median(sorted: &[f32]) -> f32 {
    let n = sorted.len();
    if n.is_multiple_of(2) {
        0.5 * (sorted[n / 2] + sorted[n / 2 - 1])
    } else {
        sorted[n / 2]
    }
}

/// The final numbers of a comparison.
#[derive(Debug, Clone)]
pub struct KldSummary {
    /// Mean PPL of the model (± standard error).
    pub ppl: (f64, f64),
    /// Mean PPL of the base.
    pub ppl_base: (f64, f64),
    /// Correlation of ln PPL(Q) and ln PPL(base).
    pub ln_ppl_correlation: f64,
    /// Mean ln(PPL(Q)/PPL(base)).
    pub ln_ppl_ratio: (f64, f64),
    /// PPL(Q)/PPL(base).
    pub ppl_ratio: (f64, f64),
    /// PPL(Q) − PPL(base).
    pub ppl_diff: (f64, f64),
    /// Mean KLD.
    pub kld_mean: (f64, f64),
    /// The part of the mean KLD's standard error that comes from estimating each position's
    /// KLD (a teacher dataset's tail samples; 0 when every position's is exact): the mean's
    /// error over the text already includes it.
    pub kld_estimate_error: f64,
    /// Sorted-KLD quantiles: max, 99.9, 99, 95, 90, median, 10, 5, 1, 0.1 %, min.
    pub kld_quantiles: Quantiles,
    /// Mean Δp of the correct token (fraction, ± error).
    pub delta_p_mean: (f64, f64),
    /// Δp quantiles (with 75 % and 25 %).
    pub delta_p_quantiles: Quantiles,
    /// RMS Δp.
    pub delta_p_rms: (f64, f64),
    /// Fraction of positions where both models' most likely token agree.
    pub same_top: (f64, f64),
    /// Positions compared.
    pub count: usize,
}

/// Order statistics of a distribution, as llama-perplexity prints them.
#[derive(Debug, Clone)]
pub struct Quantiles {
    /// Largest value.
    pub max: f32,
    /// (label, value) pairs from high to low, the median among them.
    pub levels: Vec<(&'static str, f32)>,
    /// Smallest value.
    pub min: f32,
}

impl Quantiles {
    /// The value at `label` ("99.0%", "Median", …).
    pub fn get(&self, label: &str) -> f32 {
        self.levels
            .iter()
            .find(|(l, _)| *l == label)
            .map(|(_, v)| *v)
            .expect("known quantile label")
    }
}

impl KldStats {
    /// Compares one chunk's logits with its llama.cpp base rows.
    pub fn add_chunk(
        &mut self,
        logits: &[f32],
        base_rows: &[u16],
        targets: &[u32],
        n_vocab: usize,
    ) {
        let nv = row_slots(n_vocab);
        let rows: Vec<TokenComparison> = logits
            .par_chunks(n_vocab)
            .zip(base_rows.par_chunks(nv))
            .zip(targets.par_iter())
            .map(|((l, b), &t)| compare_row(l, b, t))
            .collect();
        self.add(&rows);
    }

    /// Adds compared positions, in order.
    pub fn add(&mut self, rows: &[TokenComparison]) {
        for r in rows {
            let (nll, nll_base) = (r.nll as f64, r.nll_base as f64);
            self.sum_nll += nll;
            self.sum_nll2 += (r.nll * r.nll) as f64;
            self.sum_nll_base += nll_base;
            self.sum_nll_base2 += (r.nll_base * r.nll_base) as f64;
            self.sum_nll_nll_base += (r.nll * r.nll_base) as f64;
            self.sum_kld += r.kld;
            self.sum_kld2 += r.kld * r.kld;
            self.sum_kld_variance += r.kld_variance;
            let pd = r.p_diff as f64;
            self.sum_p_diff += pd;
            let pd2 = (r.p_diff * r.p_diff) as f64;
            self.sum_p_diff2 += pd2;
            self.sum_p_diff4 += pd2 * pd2;
            self.n_same_top += r.same_top as usize;
            self.kld_values.push(r.kld as f32);
            self.p_diff_values.push(r.p_diff);
        }
    }

    /// Mean KL divergence over the positions compared so far (0 before any).
    pub fn mean_kld(&self) -> f64 {
        self.sum_kld / self.count().max(1) as f64
    }

    /// Positions compared so far.
    pub fn count(&self) -> usize {
        self.kld_values.len()
    }

    /// The model's perplexity statistics over the compared positions.
    pub fn perplexity(&self) -> PerplexityStats {
        PerplexityStats::from_sums(self.sum_nll, self.sum_nll2, self.count())
    }

    /// Means and errors that need no sorting (shared by the per-chunk line and the summary).
    fn moments(&self) -> Moments {
        let n = self.count();
        let log_ppl = mean_and_uncertainty(self.sum_nll, self.sum_nll2, n);
        let log_base = mean_and_uncertainty(self.sum_nll_base, self.sum_nll_base2, n);
        let cov = if n < 10 {
            0.0
        } else {
            let mean_product = self.sum_nll_nll_base / n as f64;
            (mean_product - (self.sum_nll / n as f64) * (self.sum_nll_base / n as f64))
                / (n - 1) as f64
        };
        let mse = mean_and_uncertainty(self.sum_p_diff2, self.sum_p_diff4, n);
        let rms = mse.0.sqrt();
        let same = self.n_same_top as f64 / n as f64;
        Moments {
            log_ppl,
            log_base,
            cov,
            ln_ratio: (
                log_ppl.0 - log_base.0,
                (log_ppl.1 * log_ppl.1 + log_base.1 * log_base.1 - 2.0 * cov).sqrt(),
            ),
            kld: mean_and_uncertainty(self.sum_kld, self.sum_kld2, n),
            rms: (rms, 0.5 / rms * mse.1),
            same_top: (same, (same * (1.0 - same) / (n as f64 - 1.0)).sqrt()),
        }
    }

    /// The running values llama-perplexity prints after each chunk: PPL, ln(PPL(Q)/PPL(base)),
    /// mean KLD, RMS Δp, same top p (each with its error).
    pub fn running_line(&self) -> [(f64, f64); 5] {
        let m = self.moments();
        let ppl = m.log_ppl.0.exp();
        [
            (ppl, ppl * m.log_ppl.1),
            m.ln_ratio,
            m.kld,
            m.rms,
            m.same_top,
        ]
    }

    /// Everything llama-perplexity prints after the chunks (needs at least one position).
    pub fn summary(&self) -> KldSummary {
        let m = self.moments();
        let ppl = (m.log_ppl.0.exp(), m.log_ppl.0.exp() * m.log_ppl.1);
        let ppl_base = (m.log_base.0.exp(), m.log_base.0.exp() * m.log_base.1);
        let ppl_cov = ppl.0 * ppl_base.0 * m.cov;
        let mut klds = self.kld_values.clone();
        klds.sort_by(f32::total_cmp);
        let mut pds = self.p_diff_values.clone();
        pds.sort_by(f32::total_cmp);
        KldSummary {
            ppl,
            ppl_base,
            ln_ppl_correlation: m.cov / (m.log_ppl.1 * m.log_base.1),
            ln_ppl_ratio: m.ln_ratio,
            ppl_ratio: (m.ln_ratio.0.exp(), m.ln_ratio.0.exp() * m.ln_ratio.1),
            ppl_diff: (
                ppl.0 - ppl_base.0,
                (ppl.1 * ppl.1 + ppl_base.1 * ppl_base.1 - 2.0 * ppl_cov).sqrt(),
            ),
            kld_mean: m.kld,
            kld_estimate_error: self.sum_kld_variance.sqrt() / self.count().max(1) as f64,
            kld_quantiles: Quantiles::of(&klds, false),
            delta_p_mean: mean_and_uncertainty(self.sum_p_diff, self.sum_p_diff2, self.count()),
            delta_p_quantiles: Quantiles::of(&pds, true),
            delta_p_rms: m.rms,
            same_top: m.same_top,
            count: self.count(),
        }
    }
}

struct Moments {
    log_ppl: (f64, f64),
    log_base: (f64, f64),
    cov: f64,
    ln_ratio: (f64, f64),
    kld: (f64, f64),
    rms: (f64, f64),
    same_top: (f64, f64),
}

impl Quantiles {
    /// The levels llama-perplexity prints for sorted `v` (quartiles only for Δp).
    fn of(v: &[f32], with_quartiles: bool) -> Quantiles {
        let mut levels = vec![
            ("99.9%", percentile(v, 0.999)),
            ("99.0%", percentile(v, 0.990)),
            ("95.0%", percentile(v, 0.950)),
            ("90.0%", percentile(v, 0.900)),
        ];
        if with_quartiles {
            levels.push(("75.0%", percentile(v, 0.750)));
        }
        levels.push(("Median", median(v)));
        if with_quartiles {
            levels.push(("25.0%", percentile(v, 0.250)));
        }
        levels.extend([
            ("10.0%", percentile(v, 0.100)),
            (" 5.0%", percentile(v, 0.050)),
            (" 1.0%", percentile(v, 0.010)),
            (" 0.1%", percentile(v, 0.001)),
        ]);
        Quantiles {
            max: v[v.len() - 1],
            levels,
            min: v[0],
        }
    }
}

/// Runs `model` over the chunks `base` holds (at most `max_chunks`), comparing each with the
/// base's rows; `on_chunk` sees the chunk index and the running statistics after it (progress,
/// llama-perplexity's per-chunk line). Used by `smelt perplexity --kld` and `smelt release`.
pub fn compare_with_base(
    model: &Model,
    base: &mut BaseReader,
    max_chunks: Option<usize>,
    bos: Option<u32>,
    mut on_chunk: impl FnMut(usize, &KldStats),
) -> Result<KldStats> {
    let n_vocab = model.hparams.n_vocab;
    if base.n_vocab != n_vocab {
        return Err(FormatError::new(
            &base.path,
            format!(
                "vocabulary of {} tokens, the model has {n_vocab}",
                base.n_vocab
            ),
        ));
    }
    let plan = ChunkPlan::new(base.tokens.len(), base.n_ctx, max_chunks, &base.path)?;
    let tokens = std::mem::take(&mut base.tokens);
    let mut stats = KldStats::default();
    let mut err = None;
    run_chunks(model, &tokens, &plan, bos, None, |chunk| {
        if err.is_some() {
            return;
        }
        match base.next_chunk() {
            Ok(rows) => stats.add_chunk(chunk.logits, &rows, chunk.targets, n_vocab),
            Err(e) => return err = Some(e),
        }
        on_chunk(chunk.index, &stats);
    });
    base.tokens = tokens;
    match err {
        Some(e) => Err(e),
        None => Ok(stats),
    }
}

/// The headline KL-divergence figures: the KLD part of `--json` and of `smelt release`'s report.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct KldHeadline {
    /// KL divergence from the base: mean, median, p90, p99, max.
    pub kld: KldFigures,
    /// Fraction of positions whose most likely token is the base's.
    pub same_top_p: f64,
    /// Δp of the correct token: mean and RMS (fractions).
    pub delta_p: DeltaP,
    /// PPL(model) / PPL(base).
    pub ppl_ratio: f64,
}

/// KL-divergence figures.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct KldFigures {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub median: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

/// Δp figures.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct DeltaP {
    /// Mean.
    pub mean: f64,
    /// Root mean square.
    pub rms: f64,
}

impl From<&KldSummary> for KldHeadline {
    fn from(s: &KldSummary) -> KldHeadline {
        let q = |label| s.kld_quantiles.get(label) as f64;
        KldHeadline {
            kld: KldFigures {
                mean: s.kld_mean.0,
                median: q("Median"),
                p90: q("90.0%"),
                p99: q("99.0%"),
                max: s.kld_quantiles.max as f64,
            },
            same_top_p: s.same_top.0,
            delta_p: DeltaP {
                mean: s.delta_p_mean.0,
                rms: s.delta_p_rms.0,
            },
            ppl_ratio: s.ppl_ratio.0,
        }
    }
}
