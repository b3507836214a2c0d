//! Choosing every tensor's type under a size budget from measured costs: a multiple-choice
//! knapsack (one option per tensor, total bytes at most the budget, least total cost), solved by
//! dynamic programming over the budget in small units, then topped up with the exact bytes the
//! units' rounding left over. Deterministic: ties go to the earlier option.

use formats::gguf::GgmlType;

/// One way to store one tensor: its type, its padded size in the file, and what it costs.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The tensor type.
    pub ty: GgmlType,
    /// Bytes the tensor takes in the file, padding included.
    pub bytes: u64,
    /// Predicted loss of quality (the mean KL divergence it adds).
    pub cost: f64,
}

/// A tensor to allocate and its candidates.
#[derive(Debug, Clone)]
pub struct Item {
    /// GGUF tensor name.
    pub name: String,
    /// The types it may take (at least one).
    pub candidates: Vec<Candidate>,
}

/// Units the budget is cut into for the dynamic programme: fine enough that rounding each
/// option's size up to a unit loses at most a tenth of a per cent or so of a realistic budget,
/// coarse enough that the table stays small (items × units bytes of back-pointers).
const UNITS: u64 = 1 << 15;

/// The index of the chosen candidate of every item: least total cost with total bytes at most
/// `budget`. Fails when even the smallest candidates do not fit.
pub fn solve(items: &[Item], budget: u64) -> Result<Vec<usize>, String> {
    let smallest: u64 = items
        .iter()
        .map(|i| i.candidates.iter().map(|c| c.bytes).min().unwrap_or(0))
        .sum();
    if smallest > budget {
        return Err(format!(
            "the smallest candidate types take {smallest} bytes, more than the {budget} bytes the budget leaves for them"
        ));
    }
    let unit = budget.div_ceil(UNITS).max(1);
    let capacity = (budget / unit) as usize;
    let width = |c: &Candidate| c.bytes.div_ceil(unit) as usize;
    // best[c]: least cost of the items so far in at most c units.
    let mut best = vec![0.0f64; capacity + 1];
    let mut choice: Vec<Vec<u8>> = Vec::with_capacity(items.len());
    for item in items {
        assert!(
            !item.candidates.is_empty() && item.candidates.len() < 256,
            "1 to 255 candidates per tensor"
        );
        let mut next = vec![f64::INFINITY; capacity + 1];
        let mut picked = vec![u8::MAX; capacity + 1];
        for (k, cand) in item.candidates.iter().enumerate() {
            let w = width(cand);
            for c in w..=capacity {
                let v = best[c - w] + cand.cost;
                if v < next[c] {
                    next[c] = v;
                    picked[c] = k as u8;
                }
            }
        }
        best = next;
        choice.push(picked);
    }
    if !best[capacity].is_finite() {
        // The units' rounding made the smallest choice too wide: take it exactly.
        let chosen = items
            .iter()
            .map(|i| smallest_index(&i.candidates))
            .collect();
        return Ok(top_up(items, chosen, budget));
    }
    let mut chosen = vec![0usize; items.len()];
    let mut c = capacity;
    for (i, item) in items.iter().enumerate().rev() {
        let k = choice[i][c] as usize;
        chosen[i] = k;
        c -= width(&item.candidates[k]);
    }
    Ok(top_up(items, chosen, budget))
}

fn smallest_index(candidates: &[Candidate]) -> usize {
    (0..candidates.len())
        .min_by_key(|&k| candidates[k].bytes)
        .expect("at least one candidate")
}

/// Spends the bytes the units' rounding left over: repeatedly makes the single change that lowers
/// the cost most among those that still fit.
fn top_up(items: &[Item], mut chosen: Vec<usize>, budget: u64) -> Vec<usize> {
    let total = |chosen: &[usize]| -> u64 {
        items
            .iter()
            .zip(chosen)
            .map(|(i, &k)| i.candidates[k].bytes)
            .sum()
    };
    loop {
        let left = budget - total(&chosen);
        let mut best: Option<(usize, usize, f64)> = None;
        for (i, item) in items.iter().enumerate() {
            let now = &item.candidates[chosen[i]];
            for (k, cand) in item.candidates.iter().enumerate() {
                let gain = now.cost - cand.cost;
                if gain > 0.0
                    && cand.bytes <= now.bytes + left
                    && best.is_none_or(|(_, _, g)| gain > g)
                {
                    best = Some((i, k, gain));
                }
            }
        }
        match best {
            Some((i, k, _)) => chosen[i] = k,
            None => return chosen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(name: &str, options: &[(u64, f64)]) -> Item {
        Item {
            name: name.into(),
            candidates: options
                .iter()
                .map(|&(bytes, cost)| Candidate {
                    ty: GgmlType::Q4_K,
                    bytes,
                    cost,
                })
                .collect(),
        }
    }

    /// Every combination, for checking the solver on small cases.
    fn brute_force(items: &[Item], budget: u64) -> f64 {
        let mut best = f64::INFINITY;
        let n: usize = items.iter().map(|i| i.candidates.len()).product();
        for mut code in 0..n {
            let (mut bytes, mut cost) = (0, 0.0);
            for i in items {
                let c = &i.candidates[code % i.candidates.len()];
                code /= i.candidates.len();
                bytes += c.bytes;
                cost += c.cost;
            }
            if bytes <= budget && cost < best {
                best = cost;
            }
        }
        best
    }

    fn cost_of(items: &[Item], chosen: &[usize]) -> (u64, f64) {
        items.iter().zip(chosen).fold((0, 0.0), |(b, c), (i, &k)| {
            (b + i.candidates[k].bytes, c + i.candidates[k].cost)
        })
    }

    #[test]
    fn finds_the_cheapest_combination_that_fits() {
        let items = vec![
            item("a", &[(100, 9.0), (200, 4.0), (400, 1.0)]),
            item("b", &[(100, 3.0), (200, 2.5), (400, 0.1)]),
            item("c", &[(50, 5.0), (150, 0.5)]),
        ];
        for budget in [250, 300, 400, 450, 500, 650, 700, 900, 1000] {
            let chosen = solve(&items, budget).unwrap();
            let (bytes, cost) = cost_of(&items, &chosen);
            assert!(bytes <= budget, "budget {budget}: {bytes} bytes");
            assert_eq!(cost, brute_force(&items, budget), "budget {budget}");
        }
    }

    #[test]
    fn matches_brute_force_on_awkward_sizes() {
        // Sizes that do not divide into the units, costs that are not monotone in size.
        let mut state = 12345u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            state >> 33
        };
        for _ in 0..30 {
            let items: Vec<Item> = (0..5)
                .map(|i| {
                    let opts: Vec<(u64, f64)> = (0..3)
                        .map(|_| (1000 + next() % 90_000, (next() % 1000) as f64 / 7.0))
                        .collect();
                    item(&format!("t{i}"), &opts)
                })
                .collect();
            let min: u64 = items
                .iter()
                .map(|i| i.candidates.iter().map(|c| c.bytes).min().unwrap())
                .sum();
            let budget = min + next() % 200_000;
            let chosen = solve(&items, budget).unwrap();
            let (bytes, cost) = cost_of(&items, &chosen);
            assert!(bytes <= budget);
            // Rounding each size up to a unit costs at most one unit per item: the result is at
            // least as good as the optimum of a budget that many units smaller.
            let unit = budget.div_ceil(UNITS);
            let slack = items.len() as u64 * unit;
            if budget >= min + slack {
                assert!(cost <= brute_force(&items, budget - slack));
            }
            assert!(cost >= brute_force(&items, budget));
        }
    }

    #[test]
    fn refuses_a_budget_below_the_smallest_choice() {
        let items = vec![item("a", &[(100, 1.0), (200, 0.5)])];
        assert!(solve(&items, 99).unwrap_err().contains("100 bytes"));
    }
}
