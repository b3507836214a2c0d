//! The tail of a teacher row — every token after the kept ones — as a sample drawn from the
//! teacher's own tail distribution, so that KL divergence measured against a row is an unbiased
//! estimate of the full-vocabulary figure instead of a lower bound.
//!
//! Lumping the tail into one outcome drops `P_T · KL(p_T ‖ q_T)`, the divergence between the
//! teacher's and the student's distributions *within* the tail (P_T its mass, p_T and q_T the
//! two distributions restricted to it and renormalised). On a 152K-token vocabulary that term is
//! most of the error. A row keeps `m` tokens drawn from p_T with their log-probabilities; with
//! `r = (q_i / Q_T) / (p_i / P_T)` for a drawn token, `r − 1 − ln r` has expectation
//! `KL(p_T ‖ q_T)` under p_T (because `E[r] = 1`), is never negative, and varies less than
//! `−ln r` alone. So a row's estimate is the exact head, the lumped term, and
//! `P_T · mean(r − 1 − ln r)`.

use super::row::log_prob_of;

/// Sampled tokens' log-probabilities are stored in steps of 1/32 nat below a reference (see
/// [`reference`]): the rounding moves an estimate by about `r·h²/6` per token (h = 1/64), far
/// below the sampling error.
pub const STEPS_PER_NAT: f64 = 32.0;

/// How many tail tokens a row whose tail holds probability `rest` carries: `per_unit_mass`
/// samples per unit of the mass beyond `max_rest`. The user has called `max_rest` negligible:
/// a row whose kept tokens stopped there carries none (the lumped term is then within about
/// `max_rest` of the truth), and so do most rows of a small vocabulary, which stay about the
/// size they were; a row cut off by top-k with much more left over carries many.
pub fn sample_count(rest: f64, max_rest: f32, per_unit_mass: u32) -> usize {
    let beyond = rest.min(1.0) - max_rest as f64;
    (beyond.max(0.0) * per_unit_mass as f64).floor() as usize
}

/// The log-probability code 0 of a sampled token stands for: one nat above the last kept
/// token's (no tail token is more likely than a kept one, and one nat covers the head's own
/// rounding).
pub fn reference(last_kept_code: u32) -> f64 {
    log_prob_of(last_kept_code) as f64 + 1.0
}

/// The stored code of ln p for a sampled token.
pub fn code_of(log_prob: f64, reference: f64) -> u32 {
    ((reference - log_prob) * STEPS_PER_NAT).round().max(0.0) as u32
}

/// The ln p a sampled token's code stands for.
pub fn log_prob_of_code(code: u32, reference: f64) -> f64 {
    reference - code as f64 / STEPS_PER_NAT
}

/// Probability classes of a quarter nat: the tail is ordered by class before sampling.
const CLASSES: usize = 256;

/// Draws `m` tokens from the tail (every token not in `head` whose `log_prob(i)`, normalised or
/// not, is finite), each with probability in proportion to its own: systematic sampling along the tail
/// ordered by quarter-nat probability class, from a start that `seed` fixes, so the draw covers
/// the tail's range of probabilities evenly and the same row gives the same sample on every
/// run. Returns the drawn ids (a token as likely as 1/m of the tail can be drawn twice).
pub fn sample(
    log_prob: impl Fn(usize) -> f64,
    n_vocab: usize,
    head: &[u32],
    m: usize,
    seed: u64,
) -> Vec<u32> {
    if m == 0 {
        return Vec::new();
    }
    let mut in_head = vec![false; n_vocab];
    head.iter().for_each(|&i| in_head[i as usize] = true);
    let tail: Vec<(u32, f64)> = (0..n_vocab)
        .filter(|&i| !in_head[i])
        .map(|i| (i as u32, log_prob(i)))
        .filter(|t| t.1.is_finite())
        .collect();
    let Some(top) = tail.iter().map(|t| t.1).reduce(f64::max) else {
        return Vec::new();
    };
    let class = |lp: f64| (((top - lp) * 4.0) as usize).min(CLASSES - 1);
    let mut starts = [0usize; CLASSES + 1];
    tail.iter().for_each(|t| starts[class(t.1) + 1] += 1);
    for c in 0..CLASSES {
        starts[c + 1] += starts[c];
    }
    let mut ordered = vec![(0u32, 0.0f64); tail.len()];
    for &(id, lp) in &tail {
        let at = &mut starts[class(lp)];
        ordered[*at] = (id, (lp - top).exp());
        *at += 1;
    }
    let total: f64 = ordered.iter().map(|t| t.1).sum();
    let step = total / m as f64;
    let start = (splitmix64(seed) >> 11) as f64 / (1u64 << 53) as f64;
    let mut drawn = Vec::with_capacity(m);
    let (mut cumulative, mut at) = (0.0, 0);
    for j in 0..m {
        let point = (start + j as f64) * step;
        while at + 1 < ordered.len() && cumulative + ordered[at].1 <= point {
            cumulative += ordered[at].1;
            at += 1;
        }
        drawn.push(ordered[at].0);
    }
    drawn
}

/// A well-mixed 64-bit hash of `x` (SplitMix64's finaliser).
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Over many seeds each tail token is drawn in proportion to its probability; the head
    /// never is.
    #[test]
    fn draws_follow_the_tail_distribution() {
        let lp: Vec<f64> = (0..50).map(|i| -(i as f64) * 0.2).collect();
        let head = [0u32, 1, 2];
        let mut counts = [0usize; 50];
        let (m, seeds) = (7, 20_000u64);
        for seed in 0..seeds {
            for id in sample(|i| lp[i], 50, &head, m, seed) {
                counts[id as usize] += 1;
            }
        }
        let total: f64 = (3..50).map(|i| lp[i].exp()).sum();
        for i in 0..50 {
            let expected = if i < 3 { 0.0 } else { lp[i].exp() / total };
            let got = counts[i] as f64 / (m as u64 * seeds) as f64;
            assert!(
                (got - expected).abs() < 0.004,
                "token {i}: {got} vs {expected}"
            );
        }
    }
}
