//! Distillation training: a student's float tensors trained with AdamW to match a teacher
//! dataset (forward KL over the teacher's kept tokens and the rest, plus optional
//! cross-entropy), a batch of chunks per step, checkpointed and resumable.
//!
//! Determinism: the chunk order comes from the seed alone, each chunk's gradient is computed by
//! one thread, and a batch's gradients are summed in chunk order, so a run gives the same bytes
//! for any thread count, and a resumed run the same bytes as an uninterrupted one.

mod experts;
mod graph;
pub mod loss;
pub mod ops;
pub mod run;
pub mod student;

use std::path::Path;

use formats::gguf::{GgufFile, GgufWriter};
use formats::{FormatError, Result};
use rayon::prelude::*;

use crate::sdd::{Chunk, Header, SddReader};
use student::{Objective, Student};

/// Training settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Optimizer steps in all.
    pub steps: usize,
    /// Peak learning rate (after a short warm-up, decayed on a cosine to a tenth).
    pub lr: f32,
    /// Chunks per step.
    pub batch: usize,
    /// AdamW weight decay (matrices only).
    pub weight_decay: f32,
    /// Objective weights.
    pub objective: Objective,
    /// Seed of the chunk order.
    pub seed: u64,
}

/// Teacher chunks from one or more datasets, held in memory for shuffled batches.
pub struct TrainingData {
    /// Every chunk, datasets in the order given.
    pub chunks: Vec<Chunk>,
    /// First scored position (the same in every dataset).
    pub first: usize,
    /// BOS put in front of each chunk.
    pub bos: Option<u32>,
}

impl TrainingData {
    /// Reads every chunk of `paths`; they must share vocabulary, tokenizer, n_ctx and BOS.
    pub fn load(paths: &[&Path]) -> Result<(TrainingData, Header)> {
        let mut chunks = Vec::new();
        let mut first_header: Option<Header> = None;
        for path in paths {
            let mut reader = SddReader::open(path)?;
            let h = reader.header().clone();
            if let Some(f) = &first_header {
                let same = (f.tokenizer, f.n_vocab, f.n_ctx, f.bos)
                    == (h.tokenizer, h.n_vocab, h.n_ctx, h.bos);
                if !same {
                    return Err(FormatError::new(
                        path,
                        "tokenizer, vocabulary, n_ctx or BOS differ from the first dataset's",
                    ));
                }
            }
            while let Some(c) = reader.next_chunk()? {
                chunks.push(c);
            }
            first_header.get_or_insert(h);
        }
        let header = first_header.expect("at least one dataset");
        if chunks.is_empty() {
            return Err(FormatError::new(
                paths[0],
                "holds no chunks: nothing to train on",
            ));
        }
        Ok((
            TrainingData {
                chunks,
                first: header.first_scored(),
                bos: header.bos,
            },
            header,
        ))
    }

    /// The chunk indices of step `step`: epochs of a seeded permutation.
    fn batch(&self, settings: &Settings, step: usize) -> Vec<usize> {
        let n = self.chunks.len();
        (0..settings.batch)
            .map(|i| {
                let k = step * settings.batch + i;
                permutation(n, settings.seed.wrapping_add((k / n) as u64))[k % n]
            })
            .collect()
    }
}

/// A seeded Fisher–Yates permutation of `0..n`.
fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut s = seed ^ 0x9E37_79B9_7F4A_7C15;
    for i in (1..n).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        order.swap(i, (s % (i as u64 + 1)) as usize);
    }
    order
}

/// AdamW state for every trainable tensor.
#[derive(Debug, Clone)]
pub struct AdamW {
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    /// Steps taken.
    pub step: usize,
}

impl AdamW {
    /// Zero moments for `student`.
    pub fn new(student: &Student) -> AdamW {
        AdamW {
            m: student.zero_grads(),
            v: student.zero_grads(),
            step: 0,
        }
    }

    /// One update of `student` with `grads` at learning rate `lr`.
    pub fn update(&mut self, student: &mut Student, grads: &[Vec<f32>], lr: f32, decay: f32) {
        let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
        self.step += 1;
        let c1 = 1.0 - b1.powi(self.step as i32);
        let c2 = 1.0 - b2.powi(self.step as i32);
        for (i, p) in student.params.iter_mut().enumerate() {
            if !p.trainable {
                continue;
            }
            let wd = if p.dims.len() > 1 { decay } else { 0.0 };
            let (m, v) = (&mut self.m[i], &mut self.v[i]);
            for (((w, &g), m), v) in p.data.iter_mut().zip(&grads[i]).zip(m).zip(v) {
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                let update = (*m / c1) / ((*v / c2).sqrt() + eps);
                *w -= lr * (update + wd * *w);
            }
        }
    }
}

/// The learning rate at `step`: linear warm-up over the first 5 % of steps, then a cosine
/// down to a tenth of `peak`.
pub fn learning_rate(peak: f32, step: usize, steps: usize) -> f32 {
    let warm = (steps / 20).max(1);
    if step < warm {
        return peak * (step + 1) as f32 / warm as f32;
    }
    let t = (step - warm) as f32 / (steps - warm).max(1) as f32;
    peak * (0.1 + 0.9 * 0.5 * (1.0 + (std::f32::consts::PI * t).cos()))
}

/// What one step measured.
#[derive(Debug, Clone, Copy)]
pub struct StepReport {
    /// Step index (0-based).
    pub step: usize,
    /// Mean KL per scored position over the batch.
    pub kl: f64,
    /// Mean cross-entropy per scored position.
    pub ce: f64,
    /// Tokens run.
    pub tokens: usize,
}

/// Runs `chunk` (BOS in front) through `student`, adding its gradient to `grads` if given.
fn chunk_loss(
    student: &Student,
    data: &TrainingData,
    chunk: &Chunk,
    objective: Objective,
    grads: Option<&mut [Vec<f32>]>,
) -> (f64, f64) {
    let mut tokens = chunk.tokens.clone();
    if let Some(b) = data.bos {
        tokens[0] = b;
    }
    student.loss_and_grads(&tokens, data.first, &chunk.rows, objective, grads)
}

/// One buffer per tensor (empty for frozen ones).
type Gradients = Vec<Vec<f32>>;

/// One optimizer step on the batch of `step`.
pub fn train_step(
    student: &mut Student,
    adam: &mut AdamW,
    data: &TrainingData,
    settings: &Settings,
) -> StepReport {
    let step = adam.step;
    let picked = data.batch(settings, step);
    let per_chunk: Vec<(Gradients, (f64, f64))> = picked
        .par_iter()
        .map(|&c| {
            let mut g = student.zero_grads();
            let chunk = &data.chunks[c];
            let losses = chunk_loss(student, data, chunk, settings.objective, Some(&mut g));
            (g, losses)
        })
        .collect();
    let rows: usize = picked.iter().map(|&c| data.chunks[c].rows.len()).sum();
    let mut grads = student.zero_grads();
    let (mut kl, mut ce) = (0.0, 0.0);
    for (g, (k, c)) in &per_chunk {
        for (acc, part) in grads.iter_mut().zip(g) {
            acc.iter_mut().zip(part).for_each(|(a, b)| *a += b);
        }
        kl += k;
        ce += c;
    }
    let scale = 1.0 / rows as f32;
    grads.iter_mut().flatten().for_each(|g| *g *= scale);
    let lr = learning_rate(settings.lr, step, settings.steps);
    adam.update(student, &grads, lr, settings.weight_decay);
    StepReport {
        step,
        kl: kl / rows as f64,
        ce: ce / rows as f64,
        tokens: picked.iter().map(|&c| data.chunks[c].tokens.len()).sum(),
    }
}

/// Mean KL per scored position of `student` over `data`'s first `max_chunks` chunks.
pub fn mean_kl(student: &Student, data: &TrainingData, max_chunks: usize) -> f64 {
    let objective = Objective { ce_weight: 0.0 };
    let n = max_chunks.min(data.chunks.len());
    let sums: Vec<(f64, usize)> = data.chunks[..n]
        .par_iter()
        .map(|c| {
            (
                chunk_loss(student, data, c, objective, None).0,
                c.rows.len(),
            )
        })
        .collect();
    let (kl, rows) = sums.iter().fold((0.0, 0), |(a, b), (k, r)| (a + k, b + r));
    kl / rows as f64
}

/// Writes `student` as a GGUF like `original` (same metadata, tensor order and types: float
/// tensors re-encoded from the trained values, frozen ones copied byte for byte).
pub fn write_student(student: &Student, original: &GgufFile, out: &Path) -> Result<()> {
    let infos: Vec<_> = original.tensors.iter().map(|t| t.info.clone()).collect();
    let mut writer = GgufWriter::create(out, &original.metadata, &infos)?;
    for (t, p) in original.tensors.iter().zip(&student.params) {
        if p.trainable {
            let mut bytes = vec![0u8; t.n_bytes as usize];
            quantize::quantize(p.ty, &p.data, &mut bytes)
                .map_err(|e| FormatError::new(out, format!("{}: {e}", p.name)))?;
            writer.write(&bytes)?;
        } else {
            writer.write(original.data(t))?;
        }
    }
    writer.finish()
}

/// Training state saved every few steps: the step, the trained tensors and AdamW's moments.
pub mod checkpoint {
    use super::*;
    use std::io::Read;

    const MAGIC: &[u8; 8] = b"SMELTCKP";

    /// Writes `student`'s trainable tensors and `adam` to `path` (atomically).
    pub fn save(path: &Path, student: &Student, adam: &AdamW) -> Result<()> {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&(adam.step as u64).to_le_bytes());
        for (i, p) in student.params.iter().enumerate() {
            if p.trainable {
                for part in [&p.data, &adam.m[i], &adam.v[i]] {
                    b.extend(part.iter().flat_map(|v| v.to_le_bytes()));
                }
            }
        }
        formats::gguf::write_atomically(path, &b)
    }

    /// Restores what [`save`] wrote into `student` and returns the optimizer state.
    pub fn load(path: &Path, student: &mut Student) -> Result<AdamW> {
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| FormatError::io(path, e))?;
        let floats: usize = student
            .params
            .iter()
            .filter(|p| p.trainable)
            .map(|p| 3 * p.data.len())
            .sum();
        if bytes.len() != 16 + 4 * floats || &bytes[..8] != MAGIC {
            return Err(FormatError::new(
                path,
                "is not a checkpoint of this student (size or magic differ)",
            ));
        }
        let mut adam = AdamW::new(student);
        adam.step = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")) as usize;
        let mut values = bytes[16..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")));
        for (i, p) in student.params.iter_mut().enumerate() {
            if p.trainable {
                for part in [&mut p.data, &mut adam.m[i], &mut adam.v[i]] {
                    part.iter_mut()
                        .for_each(|v| *v = values.next().expect("sized"));
                }
            }
        }
        Ok(adam)
    }
}

#[cfg(test)]
mod tests {
    use super::student::tests::{teacher_rows, tiny_student};
    use super::*;

    /// A dataset with no chunks (`distill import --chunks 0` makes one) is refused when it is
    /// loaded: training on it divided by zero.
    #[test]
    fn an_empty_dataset_is_refused_before_training() {
        use crate::sdd::{Opened, SddWriter};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.sdd");
        let header = Header {
            teacher: [0; 32],
            tokenizer: [0; 32],
            text: [0; 32],
            n_vocab: 16,
            n_ctx: 8,
            n_chunks: 0,
            top_k: 4,
            max_rest: 0.0,
            tail: 0,
            bos: None,
        };
        let Opened::Writing(writer) = SddWriter::open(&path, header, 1).unwrap() else {
            panic!("a new file");
        };
        writer.finish().unwrap();
        let err = TrainingData::load(&[path.as_path()])
            .err()
            .expect("refused");
        assert!(err.to_string().contains("no chunks"), "{err}");
    }

    fn data() -> TrainingData {
        let chunks = (0..6)
            .map(|c| {
                let tokens: Vec<u32> = (0..8).map(|i| ((c * 7 + i * 3) % 16) as u32).collect();
                Chunk {
                    index: c as usize,
                    rows: teacher_rows(&tokens, 4),
                    tokens,
                }
            })
            .collect();
        TrainingData {
            chunks,
            first: 4,
            bos: Some(1),
        }
    }

    fn settings() -> Settings {
        Settings {
            steps: 30,
            lr: 1e-2,
            batch: 3,
            weight_decay: 0.01,
            objective: Objective { ce_weight: 0.1 },
            seed: 5,
        }
    }

    /// Training lowers the KL, gives the same weights on 1 and 3 threads, and a run resumed
    /// from a checkpoint ends where an uninterrupted one does.
    #[test]
    fn training_is_deterministic_and_resumable() {
        let data = data();
        let run = |threads: usize, steps: usize, from: Option<(Student, AdamW)>| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let (mut s, mut adam) = from.unwrap_or_else(|| {
                    let s = tiny_student(3);
                    let a = AdamW::new(&s);
                    (s, a)
                });
                while adam.step < steps {
                    train_step(&mut s, &mut adam, &data, &settings());
                }
                (s, adam)
            })
        };
        let before = mean_kl(&tiny_student(3), &data, 6);
        let (one, _) = run(1, 30, None);
        let (three, _) = run(3, 30, None);
        assert!(mean_kl(&one, &data, 6) < 0.7 * before);
        let weights = |s: &Student| {
            s.params
                .iter()
                .flat_map(|p| p.data.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(weights(&one), weights(&three));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ck");
        let (half, adam) = run(2, 12, None);
        checkpoint::save(&path, &half, &adam).unwrap();
        let mut restored = tiny_student(3);
        let adam = checkpoint::load(&path, &mut restored).unwrap();
        assert_eq!(adam.step, 12);
        let (resumed, _) = run(2, 30, Some((restored, adam)));
        assert_eq!(weights(&one), weights(&resumed));
    }
}
