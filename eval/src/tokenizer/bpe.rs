//! `llm_tokenizer_bpe_session`: split the text with the pre-tokenizer's regular expression, map
//! each word's bytes to GPT-2's printable byte alphabet, then merge adjacent pairs by merge rank
//! (lowest first, leftmost on ties) and emit each symbol as its token, falling back to one token
//! per byte.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use fancy_regex::Regex;

use super::{utf8_len, Tokenizer};

/// GPT-2's pre-tokenizer (`tokenizer.ggml.pre` = `gpt-2`).
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
/// Llama 3's (`llama3`, `llama-bpe`).
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's (`qwen2`).
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The pre-tokenizer and merge ranks of a byte-level BPE vocabulary.
pub(super) struct Bpe {
    split: Regex,
    /// llama.cpp's `ignore_merges` (Llama 3): a word that is a token as a whole is that token,
    /// whatever the merges would make of it.
    ignore_merges: bool,
    ranks: HashMap<(String, String), usize>,
    byte_chars: [char; 256],
}

impl Bpe {
    /// Builds the tokenizer for pre-tokenizer `pre` and `merges` ("left right" per line).
    pub(super) fn new(pre: &str, merges: &[&str]) -> Result<Bpe, String> {
        let pattern = match pre {
            "gpt-2" | "gpt2" => GPT2,
            "llama3" | "llama-bpe" | "llama-v3" => LLAMA3,
            "qwen2" => QWEN2,
            other => {
                return Err(format!(
                    "BPE pre-tokenizer {other:?} is not supported (gpt-2, llama3, qwen2)"
                ))
            }
        };
        let ranks = merges
            .iter()
            .enumerate()
            .filter_map(|(rank, m)| {
                let (l, r) = m.split_once(' ')?;
                Some(((l.to_string(), r.to_string()), rank))
            })
            .collect();
        Ok(Bpe {
            split: Regex::new(pattern).expect("built-in pattern"),
            ignore_merges: pattern == LLAMA3,
            ranks,
            byte_chars: byte_alphabet(),
        })
    }

    /// Appends the tokens of `text` to `out`.
    pub(super) fn tokenize(&self, vocab: &Tokenizer, text: &str, out: &mut Vec<u32>) {
        let mut start = 0;
        while start < text.len() {
            let word = match self.split.find_from_pos(text, start) {
                Ok(Some(m)) if m.start() == start && m.end() > start => m.end(),
                Ok(Some(m)) if m.start() > start => m.start(),
                Ok(Some(m)) => m.end().max(start + 1),
                _ => text.len(),
            };
            let encoded: String = text.as_bytes()[start..word]
                .iter()
                .map(|&b| self.byte_chars[b as usize])
                .collect();
            match vocab.id(&encoded).filter(|_| self.ignore_merges) {
                Some(id) => out.push(id),
                None => self.merge_word(vocab, &encoded, out),
            }
            start = word;
        }
    }

    fn merge_word(&self, vocab: &Tokenizer, word: &str, out: &mut Vec<u32>) {
        let bytes = word.as_bytes();
        let mut pieces: Vec<(usize, usize)> = Vec::new();
        let mut offs = 0;
        while offs < bytes.len() {
            let len = utf8_len(bytes[offs]).min(bytes.len() - offs);
            pieces.push((offs, len));
            offs += len;
        }
        let mut next: Vec<Option<usize>> = (0..pieces.len())
            .map(|i| (i + 1 < pieces.len()).then_some(i + 1))
            .collect();
        let mut prev: Vec<Option<usize>> = (0..pieces.len()).map(|i| i.checked_sub(1)).collect();
        let text = |p: (usize, usize)| &word[p.0..p.0 + p.1];
        let mut queue = BinaryHeap::new();
        let push = |queue: &mut BinaryHeap<Pair>, pieces: &[(usize, usize)], l: usize, r: usize| {
            let key = (text(pieces[l]).to_string(), text(pieces[r]).to_string());
            if let Some(&rank) = self.ranks.get(&key) {
                queue.push(Pair {
                    rank,
                    left: l,
                    right: r,
                    text: key.0 + &key.1,
                });
            }
        };
        for i in 1..pieces.len() {
            push(&mut queue, &pieces, i - 1, i);
        }
        while let Some(pair) = queue.pop() {
            let (l, r) = (pieces[pair.left], pieces[pair.right]);
            if l.1 == 0 || r.1 == 0 || format!("{}{}", text(l), text(r)) != pair.text {
                continue;
            }
            pieces[pair.left].1 += r.1;
            pieces[pair.right].1 = 0;
            next[pair.left] = next[pair.right];
            if let Some(n) = next[pair.right] {
                prev[n] = Some(pair.left);
            }
            if let Some(p) = prev[pair.left] {
                push(&mut queue, &pieces, p, pair.left);
            }
            if let Some(n) = next[pair.left] {
                push(&mut queue, &pieces, pair.left, n);
            }
        }
        let mut i = (!pieces.is_empty()).then_some(0);
        while let Some(at) = i {
            let piece = text(pieces[at]);
            match vocab.id(piece) {
                Some(id) => out.push(id),
                None => out.extend(
                    piece
                        .bytes()
                        .filter_map(|b| std::str::from_utf8(&[b]).ok().and_then(|s| vocab.id(s))),
                ),
            }
            i = next[at];
        }
    }
}

struct Pair {
    rank: usize,
    left: usize,
    right: usize,
    text: String,
}

impl PartialEq for Pair {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Pair {}
impl PartialOrd for Pair {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pair {
    /// Lowest rank first; on equal ranks the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .rank
            .cmp(&self.rank)
            .then_with(|| other.left.cmp(&self.left))
    }
}

/// GPT-2's `bytes_to_unicode`: printable bytes map to themselves, the rest to U+0100 onwards.
fn byte_alphabet() -> [char; 256] {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut table = ['\0'; 256];
    let mut extra = 0;
    for b in 0..256u32 {
        table[b as usize] = if printable(b) {
            char::from_u32(b).expect("latin-1")
        } else {
            extra += 1;
            char::from_u32(255 + extra).expect("valid code point")
        };
    }
    table
}
