//! Importance weights for the quantizers, computed from an importance-matrix file exactly as
//! llama-quantize's `load_imatrix` does: GGUF entries are per-expert sums divided by the (rounded)
//! token counts, with 1 where an expert saw no tokens; legacy entries are divided by their call
//! count.

use std::collections::HashMap;

use formats::imatrix::ImatrixFile;

/// Per-tensor importance weights (one per column, times experts) plus what llama-quantize records
/// about their origin in the output's `quantize.imatrix.*` metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportanceWeights {
    /// Weights by tensor name.
    pub weights: HashMap<String, Vec<f32>>,
    /// The first dataset the file names.
    pub dataset: Option<String>,
    /// Chunks the statistics were collected over (0 if unknown).
    pub chunk_count: u32,
}

impl ImportanceWeights {
    /// Normalises `file`'s sums. Fails (with the entry's name) on a GGUF file without llama.cpp's
    /// metadata keys or on non-finite values, as llama-quantize does.
    pub fn from_file(file: &ImatrixFile) -> Result<ImportanceWeights, String> {
        if !file.legacy && !file.has_metadata {
            return Err("missing imatrix metadata (imatrix.datasets, imatrix.chunk_count, imatrix.chunk_size)".into());
        }
        let mut weights = HashMap::with_capacity(file.entries.len());
        for (name, entry) in &file.entries {
            let w: Vec<f32> = if file.legacy {
                let ncall = entry.counts.first().copied().unwrap_or(0);
                if ncall > 0 {
                    entry.sums.iter().map(|s| s / ncall as f32).collect()
                } else {
                    entry.sums.clone()
                }
            } else {
                let per_expert = entry.sums.len() / entry.counts.len();
                entry
                    .sums
                    .chunks_exact(per_expert)
                    .zip(&entry.counts)
                    .flat_map(|(sums, &count)| {
                        let count = count as f32;
                        sums.iter()
                            .map(move |s| if count > 0.0 { s / count } else { 1.0 })
                    })
                    .collect()
            };
            if let Some(bad) = w.iter().find(|v| !v.is_finite()) {
                return Err(format!("entry {name} contains non-finite value {bad}"));
            }
            weights.insert(name.clone(), w);
        }
        Ok(ImportanceWeights {
            weights,
            dataset: file.datasets.first().cloned(),
            chunk_count: file.chunk_count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use formats::imatrix::ImatrixEntry;

    #[test]
    fn gguf_entries_are_divided_by_their_expert_counts() {
        let mut f = ImatrixFile {
            has_metadata: true,
            ..Default::default()
        };
        f.entries.insert(
            "t".into(),
            ImatrixEntry {
                sums: vec![2.0, 4.0, 6.0, 8.0],
                counts: vec![2, 0],
            },
        );
        let w = ImportanceWeights::from_file(&f).unwrap();
        assert_eq!(w.weights["t"], [1.0, 2.0, 1.0, 1.0]);
    }

    #[test]
    fn gguf_without_metadata_is_refused() {
        let f = ImatrixFile::default();
        assert!(ImportanceWeights::from_file(&f)
            .unwrap_err()
            .contains("metadata"));
    }
}
