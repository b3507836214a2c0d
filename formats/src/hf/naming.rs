//! The naming keys llama.cpp's converter derives from the folder name (`general.name`,
//! `general.basename`, `general.size_label`, …): a port of gguf-py's `id_to_title`,
//! `get_model_id_components` and `size_label` for a model folder without a model card.

use crate::gguf::{Metadata, Value};

/// Adds `general.name` and the other naming keys for a model in folder `dir_name` with
/// `total_params` parameters, in gguf-py's order.
pub fn add_naming(md: &mut Metadata, dir_name: &str, total_params: u64) {
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
    let label = parts.size_label.unwrap_or_else(|| size_label(total_params));
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
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_uppercase().collect::<String>() + &c.as_str().to_lowercase())
                    .unwrap_or_default()
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
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
    }

    #[test]
    fn folder_names_as_llama_cpp_reads_them() {
        let mut md = Metadata::new();
        add_naming(&mut md, "tinystories-3M", 3_279_104);
        let get = |k: &str| md.get(k).and_then(Value::as_str).map(str::to_string);
        assert_eq!(get("general.name").as_deref(), Some("Tinystories 3M"));
        assert_eq!(get("general.basename").as_deref(), Some("tinystories"));
        assert_eq!(get("general.size_label").as_deref(), Some("3M"));

        let mut md = Metadata::new();
        add_naming(&mut md, "stories260K", 260_032);
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
