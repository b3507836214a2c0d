//! The naming keys llama.cpp's converter derives from the folder name (`general.name`,
//! `general.basename`, `general.size_label`, …): a port of gguf-py's `id_to_title`,
//! `get_model_id_components` and `size_label` for a model folder without a model card.

use crate::gguf::{Metadata, Value};

/// A model's parameters as gguf-py's `get_total_parameter_count` counts them: mixture-of-experts
/// tensors (`*_exps.*`, 3-D) count once per expert in `expert`, everything else in `shared`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParamCount {
    /// Every parameter.
    pub total: u64,
    /// Parameters outside the expert tensors.
    pub shared: u64,
    /// One expert's share of each expert tensor, summed.
    pub expert: u64,
    /// Experts summed over the expert tensors.
    expert_sum: u64,
    /// Expert tensors.
    expert_tensors: u64,
}

impl ParamCount {
    /// Adds a tensor called `name` of `dims` (ggml order, row length first).
    pub fn add(&mut self, name: &str, dims: &[u64]) {
        let size: u64 = dims.iter().product();
        self.total += size;
        if name.contains("_exps.") && dims.len() >= 3 {
            let n = if name.contains(".bias") {
                dims[1]
            } else {
                dims[2]
            };
            self.expert += size / n.max(1);
            self.expert_sum += n;
            self.expert_tensors += 1;
        } else {
            self.shared += size;
        }
    }

    /// Experts per expert tensor (the mean, rounded down; 0 for a dense model).
    pub fn expert_count(&self) -> u64 {
        self.expert_sum / self.expert_tensors.max(1)
    }

    /// gguf-py's `size_label`: `8x1.2B` for a mixture of experts, the rounded total otherwise.
    pub fn size_label(&self) -> String {
        match self.expert_count() {
            0 => size_label(self.total),
            n => format!("{n}x{}", size_label(self.shared + self.expert)),
        }
    }
}

/// Adds `general.name` and the other naming keys for a model in folder `dir_name` with
/// `params` parameters, in gguf-py's order.
pub fn add_naming(md: &mut Metadata, dir_name: &str, params: &ParamCount) {
    let total_params = params.total;
    let parts = ModelId::parse(dir_name, total_params);
    md.set("general.name", Value::String(id_to_title(dir_name)));
    for (key, value) in [
        ("general.version", &parts.version),
        ("general.finetune", &parts.finetune),
        ("general.basename", &parts.basename),
    ] {
        if let Some(v) = value {
            md.set(key, Value::String(v.clone()));
        }
    }
    let label = parts.size_label.unwrap_or_else(|| params.size_label());
    md.set("general.size_label", Value::String(label));
}

/// gguf-py `model_weight_count_rounded_notation(n, min_digits=2)`: `260K`, `3.3M`, `1.1B`.
pub fn size_label(n: u64) -> String {
    let n = n as f64;
    let (scaled, suffix) = if n > 1e12 {
        (n * 1e-12, "T")
    } else if n > 1e9 {
        (n * 1e-9, "B")
    } else if n > 1e6 {
        (n * 1e-6, "M")
    } else {
        (n * 1e-3, "K")
    };
    let digits = format!("{}", scaled.round_ties_even() as u64)
        .trim_start_matches('0')
        .len();
    let fix = 2usize.saturating_sub(digits);
    format!("{scaled:.fix$}{suffix}")
}

/// Capitalises lower-case words unless they look like versions or numbers.
fn id_to_title(id: &str) -> String {
    id.trim()
        .replace('-', " ")
        .split_whitespace()
        .map(|w| {
            let is_lower = w.chars().any(char::is_alphabetic) && !w.chars().any(char::is_uppercase);
            if is_lower && !is_version_or_number(w) {
                python_title(w)
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Python's `str.title()`: a letter after a letter is lower-cased, any other letter upper-cased
/// (`qwen3moe` → `Qwen3Moe`).
fn python_title(w: &str) -> String {
    let mut after_letter = false;
    let mut out = String::with_capacity(w.len());
    for c in w.chars() {
        let cased = c.is_lowercase() || c.is_uppercase();
        match after_letter {
            true => out.extend(c.to_lowercase()),
            false => out.extend(c.to_uppercase()),
        }
        after_letter = cased;
    }
    out
}

fn is_version_or_number(w: &str) -> bool {
    w.starts_with(|c: char| c.is_ascii_digit()) || (w.starts_with('v') && is_dotted_number(&w[1..]))
}

fn is_dotted_number(s: &str) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

#[derive(Default)]
struct ModelId {
    basename: Option<String>,
    finetune: Option<String>,
    version: Option<String>,
    size_label: Option<String>,
}

#[derive(Default, Clone, Copy, PartialEq)]
enum Kind {
    #[default]
    None,
    Version,
    Size,
    Finetune,
}

impl ModelId {
    fn parse(id: &str, total_params: u64) -> ModelId {
        if id.contains(' ') {
            return ModelId::default();
        }
        let mut parts: Vec<String> = id
            .split('-')
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect();
        let mut kinds = vec![Kind::None; parts.len()];
        for (i, part) in parts.iter_mut().enumerate() {
            let lower = part.to_ascii_lowercase();
            if is_dotted_number(lower.trim_start_matches("iter").trim_start_matches('v')) {
                kinds[i] = Kind::Version;
            } else if i > 0 && is_size(&lower) {
                kinds[i] = Kind::Size;
                let mut p = part.clone();
                if p.len() > 1 && p.as_bytes()[p.len() - 2].is_ascii_digit() {
                    let last = p.pop().unwrap().to_ascii_uppercase();
                    p.push(last);
                }
                if total_params > 0 {
                    if let Ok(v) = p[..p.len() - 1].parse::<f64>() {
                        let scale = " KMBT"
                            .find(p.chars().last().unwrap())
                            .map(|e| 1000f64.powi(e as i32))
                            .unwrap_or(0.0);
                        if (v * scale - total_params as f64).abs() > (7 * total_params / 8) as f64 {
                            kinds[i] = Kind::Finetune;
                            let last = p.pop().unwrap().to_ascii_lowercase();
                            p.push(last);
                        }
                    }
                }
                *part = p;
            } else if i > 0 && matches!(lower.as_str(), "chat" | "instruct" | "vision" | "lora") {
                kinds[i] = Kind::Finetune;
            }
        }
        let mut basename = Vec::new();
        let mut at_start = true;
        for (part, kind) in parts.iter().zip(kinds.iter_mut()) {
            if at_start
                && ((*kind == Kind::None && part.starts_with(char::is_alphabetic))
                    || *kind == Kind::Version)
            {
                if *kind == Kind::None {
                    basename.push(part.clone());
                }
            } else {
                at_start = false;
                if *kind == Kind::None {
                    *kind = Kind::Finetune;
                }
            }
        }
        let join = |k: Kind| {
            let v: Vec<&str> = parts
                .iter()
                .zip(&kinds)
                .filter(|(_, kk)| **kk == k)
                .map(|(p, _)| p.as_str())
                .collect();
            (!v.is_empty()).then(|| v.join("-"))
        };
        let (size_label, finetune, version) =
            (join(Kind::Size), join(Kind::Finetune), join(Kind::Version));
        let basename = if size_label.is_none() && finetune.is_none() && version.is_none()
            || basename.is_empty()
        {
            None
        } else {
            Some(basename.join("-"))
        };
        ModelId {
            basename,
            finetune,
            version,
            size_label,
        }
    }
}

/// `\d+([._]\d+)?[kmbt]` (the numeric size labels gguf-py recognises), lower-cased input.
fn is_size(p: &str) -> bool {
    let Some(body) = p.strip_suffix(['k', 'm', 'b', 't']) else {
        return false;
    };
    let mut halves = body.splitn(2, ['.', '_']);
    let ok =
        |s: Option<&str>| s.is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
    let first = halves.next();
    let second = halves.next();
    ok(first) && (second.is_none() || ok(second))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_labels_match_gguf_py() {
        assert_eq!(size_label(260_032), "260K");
        assert_eq!(size_label(3_279_104), "3.3M");
        assert_eq!(size_label(1_100_048_384), "1.1B");
        assert_eq!(size_label(15_000), "15K");
        assert_eq!(size_label(7_241_732_096), "7.2B");
        // Mixtral 8x7B's count: 8 experts of 5.6B expert parameters (per expert) plus 1.6B shared.
        let mut moe = ParamCount::default();
        moe.add("token_embd.weight", &[4096, 32000]);
        for il in 0..32 {
            for name in ["ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"] {
                moe.add(&format!("blk.{il}.{name}.weight"), &[4096, 14336, 8]);
            }
        }
        assert_eq!(moe.expert_count(), 8);
        assert_eq!(moe.size_label(), "8x5.8B");
    }

    #[test]
    fn folder_names_as_llama_cpp_reads_them() {
        let mut md = Metadata::new();
        add_naming(
            &mut md,
            "tinystories-3M",
            &ParamCount {
                total: 3_279_104,
                shared: 3_279_104,
                ..ParamCount::default()
            },
        );
        let get = |k: &str| md.get(k).and_then(Value::as_str).map(str::to_string);
        assert_eq!(get("general.name").as_deref(), Some("Tinystories 3M"));
        assert_eq!(get("general.basename").as_deref(), Some("tinystories"));
        assert_eq!(get("general.size_label").as_deref(), Some("3M"));
        // Python's title() starts a word again after a digit.
        assert_eq!(id_to_title("qwen3moe-tiny"), "Qwen3Moe Tiny");

        let mut md = Metadata::new();
        add_naming(
            &mut md,
            "stories260K",
            &ParamCount {
                total: 260_032,
                shared: 260_032,
                ..ParamCount::default()
            },
        );
        assert_eq!(
            md.get("general.name").and_then(Value::as_str),
            Some("stories260K")
        );
        assert!(md.get("general.basename").is_none());
        assert_eq!(
            md.get("general.size_label").and_then(Value::as_str),
            Some("260K")
        );
    }
}
