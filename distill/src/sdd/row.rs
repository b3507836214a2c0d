//! One scored position of a teacher dataset: the teacher's most likely tokens with their
//! log-probabilities on a fixed grid, the probability mass left over, and the token the text
//! continues with — and the adaptive models that code a chunk of such rows.

use super::coder::{Bit, BitIo, CountModel, SymbolModel};
use super::tail;

/// Probabilities are stored as `round((1 − √p) · LEVELS)`: uniform steps in √p. Rounding a
/// stored distribution adds about Σ p·δ²/2 to every KL divergence measured against it (δ the
/// rounding error of ln p); uniform √p steps make each kept token add the same small amount
/// (≈ 1/(6·LEVELS²)), which for a given size is the least total (a fixed step in ln p would
/// spend as many bits on a 0.1 % token as on the top one).
pub const LEVELS: u32 = 512;

/// Tokens this far (in ln p) below the most likely one are left out of a row's distribution, as
/// llama-perplexity does: its KL-divergence base stores all of them at this one floor value
/// (whatever their probability), and its KL divergence counts no token below e^-16. Counting
/// the floor would give a 152K-token vocabulary ~1.7 % of phantom mass. (The small margin keeps
/// a base file's floor entries, which decode to about 16 below the top, out.)
const DEPTH: f32 = -16.0 + 1e-4;

/// The smallest probability a code stands for: half a step of √p.
const FLOOR: f64 = 0.25 / (LEVELS as f64 * LEVELS as f64);

/// The teacher's distribution at one position, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeacherRow {
    /// Most likely tokens, most likely first (ties: lower id first).
    pub ids: Vec<u32>,
    /// Their codes (see [`LEVELS`]), non-decreasing.
    pub codes: Vec<u32>,
    /// Code of the probability mass of every token not in `ids`.
    pub rest_code: u32,
    /// The token the text continues with.
    pub target: u32,
    /// Its code.
    pub target_code: u32,
    /// Tokens drawn from the teacher's tail (see [`tail`]), ordered by code, then id.
    pub tail: Vec<u32>,
    /// Their log-probability codes ([`tail::code_of`] below [`tail::reference`]).
    pub tail_codes: Vec<u32>,
}

/// How many of a distribution's most likely tokens a row keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Selection {
    /// At most this many tokens (`--top-k`).
    pub top_k: usize,
    /// Stop earlier once the tokens kept hold all but this much probability mass.
    pub max_rest: f32,
    /// Tokens drawn from the rest per unit of its mass (`--tail-samples`; 0: the rest is only
    /// lumped).
    pub tail: u32,
}

fn code_of(prob: f64) -> u32 {
    ((1.0 - prob.clamp(0.0, 1.0).sqrt()) * LEVELS as f64).round() as u32
}

/// The log-probability a code stands for (never below ln FLOOR).
pub fn log_prob_of(code: u32) -> f32 {
    let root = 1.0 - code.min(LEVELS) as f64 / LEVELS as f64;
    (root * root).max(FLOOR).ln() as f32
}

impl TeacherRow {
    /// The stored form of one row of logits predicting `target`; `seed` fixes its tail sample
    /// (a row's index in its dataset).
    pub fn from_logits(logits: &[f32], target: u32, selection: Selection, seed: u64) -> TeacherRow {
        let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let counted = |v: f32| v - max > DEPTH;
        let sum: f64 = logits
            .iter()
            .filter(|&&v| counted(v))
            .map(|&v| ((v - max) as f64).exp())
            .sum();
        let log_sum = sum.ln();
        let log_prob = |i: usize| match counted(logits[i]) {
            true => (logits[i] - max) as f64 - log_sum,
            false => f64::NEG_INFINITY,
        };
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        let keep = selection.top_k.min(logits.len());
        let by_prob = |a: &u32, b: &u32| {
            logits[*b as usize]
                .total_cmp(&logits[*a as usize])
                .then(a.cmp(b))
        };
        if keep < order.len() {
            order.select_nth_unstable_by(keep, by_prob);
            order.truncate(keep);
        }
        order.sort_by(by_prob);
        let mut kept = 0.0f64;
        let mut n = 0;
        while n < order.len()
            && (n == 0
                || 1.0 - kept > selection.max_rest as f64 && counted(logits[order[n] as usize]))
        {
            kept += log_prob(order[n] as usize).exp();
            n += 1;
        }
        order.truncate(n);
        let rest = (1.0 - kept).max(0.0);
        let codes: Vec<u32> = order
            .iter()
            .map(|&i| code_of(log_prob(i as usize).exp()))
            .collect();
        let m = tail::sample_count(rest, selection.max_rest, selection.tail);
        let drawn = tail::sample(log_prob, logits.len(), &order, m, seed);
        let reference = tail::reference(codes[n - 1]);
        let mut sample: Vec<(u32, u32)> = drawn
            .iter()
            .map(|&i| (tail::code_of(log_prob(i as usize), reference), i))
            .collect();
        sample.sort_unstable();
        TeacherRow {
            codes,
            ids: order,
            rest_code: code_of(rest),
            target,
            target_code: code_of(log_prob(target as usize).exp()),
            tail: sample.iter().map(|s| s.1).collect(),
            tail_codes: sample.iter().map(|s| s.0).collect(),
        }
    }

    /// The stored form of a row given as full-vocabulary log-probabilities (a llama.cpp base).
    pub fn from_log_probs(
        log_probs: &[f32],
        target: u32,
        selection: Selection,
        seed: u64,
    ) -> TeacherRow {
        TeacherRow::from_logits(log_probs, target, selection, seed)
    }

    /// Normalised log-probabilities of the kept tokens, of the rest, and of the target: the
    /// stored values rescaled so the kept tokens and the rest sum to one.
    pub fn distribution(&self) -> Distribution {
        let rest = log_prob_of(self.rest_code);
        let total: f64 = self
            .codes
            .iter()
            .map(|&c| (log_prob_of(c) as f64).exp())
            .sum::<f64>()
            + (rest as f64).exp();
        let shift = total.ln() as f32;
        let reference = tail::reference(self.codes[self.codes.len() - 1]);
        Distribution {
            log_probs: self.codes.iter().map(|&c| log_prob_of(c) - shift).collect(),
            rest_log_prob: rest - shift,
            target_log_prob: log_prob_of(self.target_code) - shift,
            tail_log_probs: self
                .tail_codes
                .iter()
                .map(|&c| (tail::log_prob_of_code(c, reference) - shift as f64) as f32)
                .collect(),
        }
    }
}

/// A row's stored log-probabilities made into a distribution (see [`TeacherRow::distribution`]).
#[derive(Debug, Clone)]
pub struct Distribution {
    /// ln p of each kept token, in the row's order.
    pub log_probs: Vec<f32>,
    /// ln of the mass of all other tokens.
    pub rest_log_prob: f32,
    /// ln p of the target token.
    pub target_log_prob: f32,
    /// ln p of each token drawn from the rest, in the row's order.
    pub tail_log_probs: Vec<f32>,
}

/// Rank classes sharing id and gap statistics: 0, 1, 2, 3–4, 5–8, 9–16, 17+.
const RANK_CLASSES: usize = 7;

fn rank_class(rank: usize) -> usize {
    match rank {
        0..=2 => rank,
        3..=4 => 3,
        5..=8 => 4,
        9..=16 => 5,
        _ => 6,
    }
}

/// Gap statistics are also kept apart by the bit length of the previous token's √p level: the
/// gaps shrink as probabilities do.
const GAP_SIZES: usize = 12;

/// The adaptive models of one dataset, carried from chunk to chunk (so a reader decodes chunks
/// in order, and a resumed writer first replays the chunks already written).
#[derive(Clone)]
pub struct RowModels {
    token: SymbolModel,
    count: CountModel,
    first_code: CountModel,
    gap: Vec<CountModel>,
    id: Vec<SymbolModel>,
    rest: CountModel,
    target_rank: CountModel,
    absent_id: SymbolModel,
    absent_gap: CountModel,
    recall: Recall,
    tail_count: CountModel,
    tail_gap: CountModel,
    tail_id: SymbolModel,
}

/// Which memory a row's ids are predicted from: the last row after the same two tokens, or
/// failing that after the same token.
const ORDERS: usize = 2;

/// The ids of the last row seen after each token and each pair of tokens: a teacher in the same
/// context tends to rank the same tokens at about the same places, so most ids are coded as a
/// hit and a small shift of place instead of an id.
#[derive(Clone, Default)]
struct Recall {
    after_token: std::collections::HashMap<u32, Vec<u32>>,
    after_pair: std::collections::HashMap<(u32, u32), Vec<u32>>,
    hit: Vec<Bit>,
    shift: Vec<CountModel>,
}

impl Recall {
    fn new() -> Recall {
        Recall {
            hit: vec![Bit::default(); ORDERS * RANK_CLASSES],
            shift: vec![CountModel::default(); ORDERS * RANK_CLASSES],
            ..Recall::default()
        }
    }

    /// The remembered list for `context` and which memory it came from.
    fn list(&self, context: [u32; 2]) -> Option<(usize, Vec<u32>)> {
        if let Some(l) = self.after_pair.get(&(context[0], context[1])) {
            return Some((1, l.clone()));
        }
        self.after_token.get(&context[1]).map(|l| (0, l.clone()))
    }

    fn remember(&mut self, context: [u32; 2], ids: &[u32]) {
        self.after_token.insert(context[1], ids.to_vec());
        self.after_pair
            .insert((context[0], context[1]), ids.to_vec());
    }
}

fn zigzag(v: i64) -> u32 {
    (if v < 0 { -2 * v - 1 } else { 2 * v }) as u32
}

fn unzigzag(v: u32) -> i64 {
    if v % 2 == 1 {
        -((v as i64 + 1) / 2)
    } else {
        v as i64 / 2
    }
}

impl RowModels {
    /// Fresh models for a vocabulary of `n_vocab` tokens.
    pub fn new(n_vocab: usize) -> RowModels {
        let bits = usize::BITS - (n_vocab.max(2) - 1).leading_zeros();
        RowModels {
            token: SymbolModel::new(bits),
            count: CountModel::default(),
            first_code: CountModel::default(),
            gap: vec![CountModel::default(); RANK_CLASSES * GAP_SIZES],
            id: vec![SymbolModel::new(bits); RANK_CLASSES],
            rest: CountModel::default(),
            target_rank: CountModel::default(),
            absent_id: SymbolModel::new(bits),
            absent_gap: CountModel::default(),
            recall: Recall::new(),
            tail_count: CountModel::default(),
            tail_gap: CountModel::default(),
            tail_id: SymbolModel::new(bits),
        }
    }

    /// Codes one context token (encoder) or returns the decoded one.
    pub fn code_token(&mut self, io: &mut impl BitIo, token: u32) -> u32 {
        self.token.code(io, token)
    }

    /// Codes `row` (encoder; returns a copy) or decodes one (decoder; pass `None`); `context`
    /// holds the token before the scored one and the scored one. `None` when what is decoded
    /// cannot be a row: more than `max_ids` tokens, a recalled position outside the remembered
    /// list, more than `max_tail` tail tokens, codes past u32 (a damaged or hostile file).
    pub fn code_row(
        &mut self,
        io: &mut impl BitIo,
        row: Option<&TeacherRow>,
        context: [u32; 2],
        (max_ids, max_tail): (usize, usize),
    ) -> Option<TeacherRow> {
        let recalled = self.recall.list(context);
        let get = |f: &dyn Fn(&TeacherRow) -> u32| row.map_or(0, f);
        let n = self.count.code(io, get(&|r| r.ids.len() as u32 - 1)) as usize + 1;
        if n > max_ids {
            return None;
        }
        let mut ids = Vec::with_capacity(n);
        let mut codes: Vec<u32> = Vec::with_capacity(n);
        for j in 0..n {
            let class = rank_class(j);
            let code = if j == 0 {
                self.first_code.code(io, get(&|r| r.codes[0]))
            } else {
                let headroom = LEVELS.saturating_sub(codes[j - 1]);
                let size = (u32::BITS - headroom.leading_zeros()) as usize;
                let model = &mut self.gap[class * GAP_SIZES + size.min(GAP_SIZES - 1)];
                let gap = model.code(io, get(&|r| r.codes[j] - r.codes[j - 1]));
                codes[j - 1].checked_add(gap)?
            };
            codes.push(code);
            let id = get(&|r| r.ids[j]);
            let mut from_memory = None;
            if let Some((order, list)) = &recalled {
                let slot = order * RANK_CLASSES + class;
                let place = list.iter().position(|&i| i == id);
                if io.code(&mut self.recall.hit[slot], place.is_some()) {
                    let shift = place.map_or(0, |p| zigzag(p as i64 - j as i64));
                    let shift = unzigzag(self.recall.shift[slot].code(io, shift));
                    let at = usize::try_from(j as i64 + shift).ok()?;
                    from_memory = Some(*list.get(at)?);
                }
            }
            ids.push(from_memory.unwrap_or_else(|| self.id[class].code(io, id)));
        }
        let rest_code = self.rest.code(io, get(&|r| r.rest_code));
        let rank = get(&|r| {
            r.ids
                .iter()
                .position(|&i| i == r.target)
                .unwrap_or(r.ids.len()) as u32
        });
        let rank = self.target_rank.code(io, rank) as usize;
        let (target, target_code) = if rank < n {
            (ids[rank], codes[rank])
        } else {
            let id = self.absent_id.code(io, get(&|r| r.target));
            let gap = self
                .absent_gap
                .code(io, get(&|r| r.target_code - r.codes[n - 1]));
            (id, codes[n - 1].checked_add(gap)?)
        };
        self.recall.remember(context, &ids);
        let m = self.tail_count.code(io, get(&|r| r.tail.len() as u32)) as usize;
        if m > max_tail {
            return None;
        }
        let (mut tail, mut tail_codes) = (Vec::with_capacity(m), Vec::<u32>::with_capacity(m));
        for k in 0..m {
            let before = if k == 0 { 0 } else { tail_codes[k - 1] };
            let gap = self.tail_gap.code(io, get(&|r| r.tail_codes[k] - before));
            tail_codes.push(before.checked_add(gap)?);
            tail.push(self.tail_id.code(io, get(&|r| r.tail[k])));
        }
        Some(TeacherRow {
            ids,
            codes,
            rest_code,
            target,
            target_code,
            tail,
            tail_codes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::coder::{Decoder, Encoder};
    use super::*;

    fn logits(seed: u32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let h = (i as u32 ^ seed).wrapping_mul(2_654_435_761) >> 8;
                (h % 1000) as f32 / 100.0
            })
            .collect()
    }

    /// Selection keeps the most likely tokens until the rest is small; coding round-trips,
    /// including targets outside the kept list and tail samples.
    #[test]
    fn select_and_round_trip() {
        let sel = Selection {
            top_k: 16,
            max_rest: 0.05,
            tail: 32,
        };
        let rows: Vec<TeacherRow> = (0..200)
            .map(|s| TeacherRow::from_logits(&logits(s, 300), (s * 37) % 300, sel, s as u64))
            .collect();
        assert!(rows.iter().any(|r| r.tail.len() > 4));
        for r in &rows {
            assert!(r.ids.len() <= 16 && r.codes.windows(2).all(|w| w[0] <= w[1]));
            let d = r.distribution();
            let total: f64 = d.log_probs.iter().map(|&l| (l as f64).exp()).sum::<f64>()
                + (d.rest_log_prob as f64).exp();
            assert!((total - 1.0).abs() < 1e-5);
        }
        assert!(rows.iter().any(|r| !r.ids.contains(&r.target)));
        let mut enc = Encoder::default();
        let mut m = RowModels::new(300);
        for r in &rows {
            assert_eq!(
                &m.code_row(&mut enc, Some(r), [r.target % 3, r.target % 5], (64, 32))
                    .unwrap(),
                r
            );
        }
        let bytes = enc.finish();
        let mut dec = Decoder::new(&bytes);
        let mut m = RowModels::new(300);
        for r in &rows {
            let got = m.code_row(&mut dec, None, [r.target % 3, r.target % 5], (64, 32));
            assert_eq!(got.as_ref(), Some(r));
        }
    }

    /// A peaked distribution stops after the few tokens that hold the mass.
    #[test]
    fn adaptive_count() {
        let mut l = vec![0.0f32; 100];
        l[7] = 20.0;
        l[3] = 19.0;
        let r = TeacherRow::from_logits(
            &l,
            3,
            Selection {
                top_k: 64,
                max_rest: 0.01,
                tail: 0,
            },
            0,
        );
        assert_eq!(r.ids, vec![7, 3]);
        assert_eq!(r.target_code, r.codes[1]);
    }
}
