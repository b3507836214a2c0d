//! KL divergence against a base model, in llama-perplexity's terms: the base run saves each scored
//! position's log-probabilities (`--kl-divergence-base` file: 16-bit codes over the last 16 nats
//! of range), and a later run of another model over the same tokens compares its distributions
//! with them — mean/percentile KLD, the PPL ratio, Δp of the correct token and "same top p".

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use formats::{FormatError, Result};
use quantize::types::search::nearest_int;
use rayon::prelude::*;

use crate::fastmath::{for_each_exp, sum_exp_shifted};
use crate::model::Model;
use crate::perplexity::{run_chunks, ChunkPlan, PerplexityStats};

const MAGIC: &[u8; 8] = b"_logits_";

/// u16 slots per saved row: two f32 (scale, minimum log-probability) then the codes, padded to
/// an even count (llama.cpp's `nv`).
pub fn row_slots(n_vocab: usize) -> usize {
    2 * n_vocab.div_ceil(2) + 4
}

/// Encodes one row of logits as llama-perplexity's `log_softmax` does into `slots`
/// ([`row_slots`] long); returns the NLL of `target`.
pub fn encode_row(logits: &[f32], target: u32, slots: &mut [u16]) -> f64 {
    let max = logits.iter().fold(logits[0], |m, &v| m.max(v));
    let min = logits
        .iter()
        .fold(logits[0], |m, &v| m.min(v))
        .max(max - 16.0);
    let sum = sum_exp_shifted(logits, max);
    let log_sum = sum.ln() as f32;
    let min_log_prob = min - max - log_sum;
    let scale = (max - min) / 65535.0;
    let head = [scale.to_bits(), min_log_prob.to_bits()];
    slots[0] = head[0] as u16;
    slots[1] = (head[0] >> 16) as u16;
    slots[2] = head[1] as u16;
    slots[3] = (head[1] >> 16) as u16;
    let codes = &mut slots[4..4 + logits.len()];
    if scale != 0.0 {
        let inv = 1.0 / scale;
        for (c, &v) in codes.iter_mut().zip(logits) {
            *c = if v > min {
                nearest_int(inv * (v - min)) as u16
            } else {
                0
            };
        }
    } else {
        codes.fill(0);
    }
    slots[4 + logits.len()..].fill(0);
    (max + log_sum - logits[target as usize]) as f64
}

/// Writes a `--kl-divergence-base` file chunk by chunk (to a temporary name, renamed on finish).
pub struct BaseWriter {
    out: BufWriter<File>,
    tmp: PathBuf,
    path: PathBuf,
}

impl BaseWriter {
    /// Starts `path` with the header and the evaluated tokens (`n_chunks · n_ctx`, original
    /// tokens, not the BOS-replaced ones).
    pub fn create(
        path: &Path,
        n_ctx: usize,
        n_vocab: usize,
        n_chunks: usize,
        tokens: &[u32],
    ) -> Result<BaseWriter> {
        let tmp = formats::gguf::temp_path_for(path);
        let file = File::create(&tmp).map_err(|e| FormatError::io(path, e))?;
        let mut w = BaseWriter {
            out: BufWriter::new(file),
            tmp,
            path: path.to_path_buf(),
        };
        let mut head = MAGIC.to_vec();
        for v in [n_ctx as i32, n_vocab as i32, n_chunks as i32] {
            head.extend_from_slice(&v.to_le_bytes());
        }
        for &t in &tokens[..n_chunks * n_ctx] {
            head.extend_from_slice(&(t as i32).to_le_bytes());
        }
        w.put(&head)?;
        Ok(w)
    }

    /// Appends one chunk's scored rows; returns their NLLs.
    pub fn write_chunk(
        &mut self,
        logits: &[f32],
        targets: &[u32],
        n_vocab: usize,
    ) -> Result<Vec<f64>> {
        let nv = row_slots(n_vocab);
        let mut slots = vec![0u16; targets.len() * nv];
        let nlls: Vec<f64> = slots
            .par_chunks_mut(nv)
            .zip(logits.par_chunks(n_vocab))
            .zip(targets.par_iter())
            .map(|((s, row), &t)| encode_row(row, t, s))
            .collect();
        let bytes: Vec<u8> = slots.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.put(&bytes)?;
        Ok(nlls)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| FormatError::io(&self.path, e))
    }

    /// Flushes and moves the file into place.
    pub fn finish(self) -> Result<()> {
        let file = self
            .out
            .into_inner()
            .map_err(|e| FormatError::io(&self.path, e.into_error()))?;
        file.sync_all()
            .map_err(|e| FormatError::io(&self.path, e))?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| FormatError::io(&self.path, e))
    }
}

/// An open `--kl-divergence-base` file: header and tokens read, rows streamed chunk by chunk.
pub struct BaseReader {
    input: BufReader<File>,
    path: PathBuf,
    /// Context the base was computed with.
    pub n_ctx: usize,
    /// Vocabulary size of the base model.
    pub n_vocab: usize,
    /// Chunks saved.
    pub n_chunks: usize,
    /// The `n_chunks · n_ctx` evaluated tokens.
    pub tokens: Vec<u32>,
}

impl BaseReader {
    /// Opens `path` and reads its header and tokens.
    pub fn open(path: &Path) -> Result<BaseReader> {
        let file = File::open(path).map_err(|e| FormatError::io(path, e))?;
        let len = file.metadata().map_err(|e| FormatError::io(path, e))?.len();
        let mut input = BufReader::new(file);
        let bad = |m: &str| FormatError::new(path, m.to_string());
        let mut magic = [0u8; 8];
        input
            .read_exact(&mut magic)
            .map_err(|_| bad("too short to be a KL-divergence base file"))?;
        if &magic != MAGIC {
            return Err(bad(
                "does not look like a file of log-probabilities (no _logits_ magic)",
            ));
        }
        let mut read_i32 = |what: &str| -> Result<usize> {
            let mut b = [0u8; 4];
            input
                .read_exact(&mut b)
                .map_err(|_| bad(&format!("truncated before {what}")))?;
            usize::try_from(i32::from_le_bytes(b)).map_err(|_| bad(&format!("negative {what}")))
        };
        let n_ctx = read_i32("n_ctx")?;
        let n_vocab = read_i32("n_vocab")?;
        let n_chunks = read_i32("n_chunk")?;
        if n_ctx < 4 || n_vocab == 0 {
            return Err(bad("implausible header (n_ctx < 4 or empty vocabulary)"));
        }
        let n_tokens = n_ctx * n_chunks;
        let expected = 20
            + 4 * n_tokens as u64
            + (n_chunks * (n_ctx - 1 - n_ctx / 2) * row_slots(n_vocab) * 2) as u64;
        if len != expected {
            return Err(bad(&format!(
                "is {len} bytes, but its header (n_ctx {n_ctx}, n_vocab {n_vocab}, {n_chunks} chunks) implies {expected}"
            )));
        }
        let mut raw = vec![0u8; 4 * n_tokens];
        input
            .read_exact(&mut raw)
            .map_err(|_| bad("truncated in the token list"))?;
        let tokens = raw
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")) as u32)
            .collect();
        Ok(BaseReader {
            input,
            path: path.to_path_buf(),
            n_ctx,
            n_vocab,
            n_chunks,
            tokens,
        })
    }

    /// Reads the next chunk's rows (`n_ctx − 1 − n_ctx/2` rows of [`row_slots`]).
    pub fn next_chunk(&mut self) -> Result<Vec<u16>> {
        let n = (self.n_ctx - 1 - self.n_ctx / 2) * row_slots(self.n_vocab);
        let mut raw = vec![0u8; 2 * n];
        self.input
            .read_exact(&mut raw)
            .map_err(|e| FormatError::io(&self.path, e))?;
        Ok(raw
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect())
    }
}

/// The two f32 that open a saved row: code scale and the log-probability of code 0.
fn scale_and_min(row: &[u16]) -> (f32, f32) {
    (
        f32::from_bits(row[0] as u32 | (row[1] as u32) << 16),
        f32::from_bits(row[2] as u32 | (row[3] as u32) << 16),
    )
}

/// The log-probabilities one saved row ([`row_slots`] long) stands for.
pub fn decode_row(row: &[u16], n_vocab: usize) -> Vec<f32> {
    let (scale, min_log_prob) = scale_and_min(row);
    row[4..4 + n_vocab]
        .iter()
        .map(|&c| scale * c as f32 + min_log_prob)
        .collect()
}

/// What one scored position contributes (llama.cpp's per-token `log_softmax` against a base);
/// computed here from a llama.cpp base row, or by `distill` from a teacher dataset row.
#[derive(Debug, Clone, Copy)]
pub struct TokenComparison {
    /// −ln p of the target under the model.
    pub nll: f32,
    /// −ln p of the target under the base.
    pub nll_base: f32,
    /// KL(base ‖ model) at this position.
    pub kld: f64,
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
