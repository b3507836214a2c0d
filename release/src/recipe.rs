//! The release recipe (`RECIPE.toml`): what to release, from what, and the quality each file must
//! keep. Relative paths resolve against the recipe's folder; command-line flags override keys.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use formats::gguf::split::SplitLimit;
use quantize::mixture::FileType;
use serde::{Deserialize, Serialize};

use crate::allocate::Target;
use crate::inputs::{file_type, TensorChoices};

/// The recipe file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipeFile {
    name: Option<String>,
    source: PathBuf,
    output: PathBuf,
    types: Vec<String>,
    calibration: Option<PathBuf>,
    calibration_chunks: Option<usize>,
    evaluation: PathBuf,
    #[serde(default = "default_ctx")]
    ctx: usize,
    chunks: Option<usize>,
    cache: Option<PathBuf>,
    split_max_size: Option<String>,
    #[serde(default)]
    card: Card,
    #[serde(default)]
    quantize: BTreeMap<String, TensorChoices>,
    #[serde(default)]
    gates: toml::Table,
}

fn default_ctx() -> usize {
    512
}

/// The model card's publishing facts (`[card]`); unset ones are taken from the source where it
/// says them (its `config.json`'s `_name_or_path`, its `README.md`'s `license:`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Card {
    /// The model these files quantize (`base_model` in the card's front matter).
    pub base_model: Option<String>,
    /// The licence identifier (`license`).
    pub license: Option<String>,
    /// Who made the files (`quantized_by`).
    pub quantized_by: Option<String>,
    /// The repository the folder is uploaded to (`user/name-GGUF`), for the usage lines.
    pub repo: Option<String>,
}

/// Above this much tensor data a type is released as a split set, so that no file passes the
/// Hugging Face Hub's 50 GB cap (metadata comes on top of the tensor data).
pub const DEFAULT_SPLIT_MAX_SIZE: &str = "49G";

/// Recipe keys a command line may override.
#[derive(Default)]
pub struct RecipeOverrides {
    /// `--split-max-size` / `--split-max-tensors`.
    pub split: Option<SplitLimit>,
    /// `--output`.
    pub output: Option<PathBuf>,
    /// `--types Q4_K_M,Q8_0`.
    pub types: Option<Vec<String>>,
    /// `--calibration`.
    pub calibration: Option<PathBuf>,
    /// `--evaluation`.
    pub evaluation: Option<PathBuf>,
    /// `--ctx`.
    pub ctx: Option<usize>,
    /// `--chunks`.
    pub chunks: Option<usize>,
    /// `--max-mean-kld`, `--max-ppl-ratio`, `--min-same-top-p` (global gates).
    pub gates: Gates,
}

/// Quality limits; an unset limit is not checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Gates {
    /// Largest mean KL divergence from the teacher.
    pub max_mean_kld: Option<f64>,
    /// Largest PPL(quant) / PPL(teacher).
    pub max_ppl_ratio: Option<f64>,
    /// Smallest fraction (0–1) of positions whose most likely token equals the teacher's.
    pub min_same_top_p: Option<f64>,
}

impl Gates {
    /// `self` with every limit `over` sets replaced.
    pub fn overridden_by(self, over: Gates) -> Gates {
        Gates {
            max_mean_kld: over.max_mean_kld.or(self.max_mean_kld),
            max_ppl_ratio: over.max_ppl_ratio.or(self.max_ppl_ratio),
            min_same_top_p: over.min_same_top_p.or(self.min_same_top_p),
        }
    }

    fn check(&self, what: &str) -> Result<()> {
        for (key, v) in [
            ("max_mean_kld", self.max_mean_kld),
            ("max_ppl_ratio", self.max_ppl_ratio),
            ("min_same_top_p", self.min_same_top_p),
        ] {
            if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
                bail!("{what}: {key} must be a non-negative number");
            }
        }
        if self.min_same_top_p.is_some_and(|v| v > 1.0) {
            bail!("{what}: min_same_top_p is a fraction between 0 and 1");
        }
        Ok(())
    }
}

/// One type of the release and how to make it.
#[derive(Debug, Clone)]
pub struct TypeRecipe {
    /// Its name in file names, reports and tables: the file type's (`Q4_K_M`), or `auto-TARGET`
    /// for a measured allocation (`auto-3.5bpw`, written `auto:3.5bpw` in a recipe).
    pub name: String,
    /// The file type (for an allocation, a placeholder until its plan names one).
    pub ftype: FileType,
    /// The size target of a measured allocation (`smelt quantize … auto`).
    pub auto: Option<Target>,
    /// Per-tensor choices (`[quantize.TYPE]`).
    pub choices: TensorChoices,
    /// Its gates: the global ones with `[gates.TYPE]` applied.
    pub gates: Gates,
}

impl TypeRecipe {
    /// The type a recipe names: a file type (`Q4_K_M`, any spelling llama-quantize takes), or
    /// `auto:TARGET` (`auto:3.5bpw`, `auto:2M`) for a measured allocation of that size.
    pub fn named(name: &str, gates: Gates) -> Result<TypeRecipe> {
        let auto = match name.strip_prefix("auto:").or(name.strip_prefix("auto-")) {
            Some(target) => Some(Target::parse(target)?),
            None => None,
        };
        let ftype = match auto {
            Some(_) => file_type("Q8_0")?,
            None => file_type(name)?,
        };
        Ok(TypeRecipe {
            name: match auto {
                Some(t) => format!("auto-{}", t.label()),
                None => ftype.name.to_string(),
            },
            ftype,
            auto,
            choices: TensorChoices::default(),
            gates,
        })
    }
}

/// A checked recipe with absolute paths.
pub struct Recipe {
    /// Release name: file names are `<name>-<TYPE>.gguf`.
    pub name: String,
    /// Checkpoint folder or GGUF file (the teacher).
    pub source: PathBuf,
    /// Release folder.
    pub output: PathBuf,
    /// Work shared between runs (teacher conversion, imatrix, KLD base, per-type results).
    pub cache: PathBuf,
    /// The types, in recipe order.
    pub types: Vec<TypeRecipe>,
    /// Imatrix text, if any.
    pub calibration: Option<PathBuf>,
    /// Chunks of the calibration text to use (default: all).
    pub calibration_chunks: Option<usize>,
    /// Evaluation text.
    pub evaluation: PathBuf,
    /// Context size of imatrix and evaluation chunks.
    pub ctx: usize,
    /// Evaluation chunks (default: all).
    pub chunks: Option<usize>,
    /// Types larger than this are released as split sets (`split_max_size`, default 49G).
    pub split: SplitLimit,
    /// The model card's publishing facts.
    pub card: Card,
}

impl Recipe {
    /// Reads `path` and applies `over`. Every problem is an error naming the recipe.
    pub fn load(path: &Path, over: RecipeOverrides) -> Result<Recipe> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read the recipe", path.display()))?;
        let file: RecipeFile =
            toml::from_str(&text).map_err(|e| anyhow!("{}: {}", path.display(), e.message()))?;
        Self::from_file(file, path, over).map_err(|e| anyhow!("{}: {e:#}", path.display()))
    }

    fn from_file(file: RecipeFile, path: &Path, over: RecipeOverrides) -> Result<Recipe> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { dir.join(p) };
        let source = resolve(file.source);
        if !source.exists() {
            bail!("source {} does not exist", source.display());
        }
        let ctx = over.ctx.unwrap_or(file.ctx);
        let evaluation = over.evaluation.unwrap_or_else(|| resolve(file.evaluation));
        let calibration = over.calibration.or(file.calibration.map(&resolve));
        let (global, per_type) = parse_gates(&file.gates)?;
        let global = global.overridden_by(over.gates);
        global.check("[gates]")?;
        // tables for types a --types override left out are ignored, not errors
        let types_overridden = over.types.is_some();
        let names = over.types.unwrap_or(file.types);
        if names.is_empty() {
            bail!("types is empty: nothing to release");
        }
        let mut types: Vec<TypeRecipe> = Vec::new();
        for name in &names {
            let t = TypeRecipe::named(name, global)?;
            if types.iter().any(|u| u.name == t.name) {
                bail!("type {} is listed twice", t.name);
            }
            types.push(t);
        }
        let find = |types: &[TypeRecipe], key: &str, table: &str| -> Result<Option<usize>> {
            let name = TypeRecipe::named(key, global)
                .with_context(|| format!("[{table}.{key}]"))?
                .name;
            match types.iter().position(|t| t.name == name) {
                None if !types_overridden => bail!("[{table}.{key}]: {key} is not among the types"),
                i => Ok(i),
            }
        };
        for (key, gates) in per_type {
            let Some(i) = find(&types, &key, "gates")? else {
                continue;
            };
            types[i].gates = global.overridden_by(gates);
            types[i].gates.check(&format!("[gates.{key}]"))?;
        }
        for (key, choices) in file.quantize {
            let Some(i) = find(&types, &key, "quantize")? else {
                continue;
            };
            choices
                .overrides()
                .with_context(|| format!("[quantize.{key}]"))?;
            types[i].choices = choices;
        }
        let name = match file.name {
            Some(n) if !n.is_empty() && !n.contains(['/', '\\']) => n,
            Some(n) => bail!("name {n:?} cannot be part of a file name"),
            None => default_name(&source),
        };
        let split = match over.split {
            Some(limit) => limit,
            None => {
                let text = file.split_max_size.as_deref();
                SplitLimit::parse_size(text.unwrap_or(DEFAULT_SPLIT_MAX_SIZE))
                    .map_err(|m| anyhow!("split_max_size {m}"))?
            }
        };
        let card = with_source_facts(file.card, &source);
        Ok(Recipe {
            name,
            split,
            card,
            output: over.output.unwrap_or_else(|| resolve(file.output)),
            cache: resolve(file.cache.unwrap_or_else(|| ".smelt-cache".into())),
            source,
            types,
            calibration,
            calibration_chunks: file.calibration_chunks,
            evaluation,
            ctx,
            chunks: over.chunks.or(file.chunks),
        })
    }
}

/// Splits `[gates]` into its global limits and its `[gates.TYPE]` tables.
fn parse_gates(table: &toml::Table) -> Result<(Gates, Vec<(String, Gates)>)> {
    let mut global = toml::Table::new();
    let mut per_type = Vec::new();
    for (key, value) in table {
        match value {
            toml::Value::Table(t) => {
                let gates: Gates = t
                    .clone()
                    .try_into()
                    .map_err(|e: toml::de::Error| anyhow!("[gates.{key}]: {}", e.message()))?;
                per_type.push((key.clone(), gates));
            }
            v => {
                global.insert(key.clone(), v.clone());
            }
        }
    }
    let global: Gates = global
        .try_into()
        .map_err(|e: toml::de::Error| anyhow!("[gates]: {}", e.message()))?;
    Ok((global, per_type))
}

/// `card` with what it leaves unset taken from the source folder: `base_model` from
/// `config.json`'s `_name_or_path` when it names a Hub repository (`org/name`), `license` from the
/// front matter of its `README.md`.
fn with_source_facts(mut card: Card, source: &Path) -> Card {
    if !source.is_dir() {
        return card;
    }
    if card.base_model.is_none() {
        card.base_model = std::fs::read_to_string(source.join("config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|c| c.get("_name_or_path")?.as_str().map(str::to_string))
            .filter(|n| n.split('/').count() == 2 && !n.starts_with(['/', '.']));
    }
    if card.license.is_none() {
        card.license = std::fs::read_to_string(source.join("README.md"))
            .ok()
            .and_then(|t| front_matter_value(&t, "license"));
    }
    card
}

/// The value of `key: value` in a Markdown file's YAML front matter (between leading `---`
/// lines), unquoted.
fn front_matter_value(text: &str, key: &str) -> Option<String> {
    let body = text.strip_prefix("---\n")?;
    let matter = &body[..body.find("\n---")?];
    matter.lines().find_map(|l| {
        let value = l.strip_prefix(key)?.strip_prefix(':')?.trim();
        let value = value.trim_matches(['"', '\'']);
        (!value.is_empty()).then(|| value.to_string())
    })
}

/// A checkpoint folder's name, or a GGUF file's stem.
fn default_name(source: &Path) -> String {
    let name = if source.is_dir() {
        source.file_name()
    } else {
        source.file_stem()
    };
    name.map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `text` as a recipe beside a checkpoint folder `ckpt` and loads it.
    fn load(text: &str, over: RecipeOverrides) -> (tempfile::TempDir, Result<Recipe>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("ckpt")).unwrap();
        let path = dir.path().join("recipe.toml");
        std::fs::write(&path, text).unwrap();
        let recipe = Recipe::load(&path, over);
        (dir, recipe)
    }

    const MINIMAL: &str = "source = \"ckpt\"\noutput = \"out\"\ntypes = [\"Q4_K_M\", \"Q8_0\"]\nevaluation = \"eval.txt\"\n";

    fn error(text: &str) -> String {
        let (_dir, r) = load(text, RecipeOverrides::default());
        format!("{:#}", r.err().expect("an error"))
    }

    #[test]
    fn a_minimal_recipe_resolves_paths_and_takes_the_defaults() {
        let (dir, r) = load(MINIMAL, RecipeOverrides::default());
        let r = r.unwrap();
        assert_eq!(r.name, "ckpt");
        assert_eq!(r.source, dir.path().join("ckpt"));
        assert_eq!(r.output, dir.path().join("out"));
        assert_eq!(r.cache, dir.path().join(".smelt-cache"));
        assert_eq!(r.evaluation, dir.path().join("eval.txt"));
        assert_eq!(
            (r.ctx, r.chunks, r.calibration.is_none()),
            (512, None, true)
        );
        assert_eq!(r.split, SplitLimit::parse_size("49G").unwrap());
        let names: Vec<&str> = r.types.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["Q4_K_M", "Q8_0"]);
        assert!(r.types.iter().all(|t| t.gates == Gates::default()));
    }

    #[test]
    fn per_type_tables_and_command_line_overrides_apply_where_they_should() {
        let text = format!(
            "{MINIMAL}ctx = 256\n[quantize.Q8_0]\npure = true\n[gates]\nmax_mean_kld = 0.1\n\
             [gates.Q4_K_M]\nmax_ppl_ratio = 1.05\n"
        );
        let over = RecipeOverrides {
            ctx: Some(128),
            gates: Gates {
                min_same_top_p: Some(0.9),
                ..Gates::default()
            },
            ..RecipeOverrides::default()
        };
        let (_dir, r) = load(&text, over);
        let r = r.unwrap();
        assert_eq!(r.ctx, 128);
        let [q4, q8] = [&r.types[0], &r.types[1]];
        assert!(q8.choices.pure && !q4.choices.pure);
        assert_eq!(
            q4.gates,
            Gates {
                max_mean_kld: Some(0.1),
                max_ppl_ratio: Some(1.05),
                min_same_top_p: Some(0.9),
            }
        );
        assert_eq!(q8.gates.max_ppl_ratio, None);
        assert_eq!(q8.gates.max_mean_kld, Some(0.1));
        // A --types override drops the types it leaves out, and their tables with them.
        let over = RecipeOverrides {
            types: Some(vec!["Q8_0".into()]),
            ..RecipeOverrides::default()
        };
        let (_dir, r) = load(&text, over);
        assert_eq!(r.unwrap().types.len(), 1);
    }

    #[test]
    fn every_recipe_problem_is_an_error_naming_the_recipe_and_the_key() {
        let cases = [
            (MINIMAL.replace("ckpt", "missing"), "source"),
            (
                MINIMAL.replace("\"Q4_K_M\", \"Q8_0\"", ""),
                "types is empty",
            ),
            (MINIMAL.replace("Q8_0", "Q4_K_M"), "listed twice"),
            (MINIMAL.replace("Q8_0", "Q9_9"), "unknown type"),
            (format!("{MINIMAL}colour = 3\n"), "colour"),
            (
                format!("{MINIMAL}name = \"a/b\"\n"),
                "cannot be part of a file name",
            ),
            (
                format!("{MINIMAL}split_max_size = \"lots\"\n"),
                "split_max_size",
            ),
            (
                format!("{MINIMAL}[gates]\nmax_mean_kld = -1.0\n"),
                "non-negative",
            ),
            (
                format!("{MINIMAL}[gates]\nmin_same_top_p = 2.0\n"),
                "between 0 and 1",
            ),
            (format!("{MINIMAL}[gates]\nmax_kld = 1.0\n"), "max_kld"),
            (
                format!("{MINIMAL}[gates.Q6_K]\nmax_mean_kld = 1.0\n"),
                "not among the types",
            ),
            (
                format!("{MINIMAL}[quantize.Q8_0]\ntensor_type = [\"x\"]\n"),
                "PATTERN=TYPE",
            ),
        ];
        for (text, want) in cases {
            let e = error(&text);
            assert!(e.contains("recipe.toml") && e.contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn front_matter_values_are_read_unquoted_and_only_from_the_front_matter() {
        let card = "---\nlicense: \"apache-2.0\"\ntags:\n- x\n---\n\nlicense: mit\n";
        assert_eq!(
            front_matter_value(card, "license").as_deref(),
            Some("apache-2.0")
        );
        assert_eq!(front_matter_value(card, "base_model"), None);
        assert_eq!(front_matter_value("license: mit\n", "license"), None);
        assert_eq!(front_matter_value("---\nlicense:\n---\n", "license"), None);
    }
}
