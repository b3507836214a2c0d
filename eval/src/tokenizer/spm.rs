//! `llm_tokenizer_spm_session`: split into UTF-8 characters, then repeatedly merge the adjacent
//! pair whose concatenation is the highest-scoring token (leftmost first on ties), then emit each
//! symbol as its token, re-splitting symbols that are not tokens and falling back to `<0xXX>`.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use rayon::prelude::*;

use super::{utf8_len, Tokenizer};

struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Higher score first; on equal scores the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

struct Session<'a> {
    vocab: &'a Tokenizer,
    text: &'a [u8],
    symbols: Vec<Symbol>,
    queue: BinaryHeap<Bigram>,
    /// Keyed by text and overwritten by later pairs, exactly as llama.cpp's `rev_merge` map.
    rev_merge: HashMap<&'a [u8], (usize, usize)>,
}

/// Appends the tokens of `text` (spaces already escaped to `▁`) to `out`. When no merge can cross
/// a newline (`newline_isolated`) the lines are independent and are tokenized in parallel, each
/// with its own small queue: the same tokens as one pass over the whole text, which is what
/// llama.cpp does, many times faster on a perplexity corpus.
pub(super) fn tokenize(vocab: &Tokenizer, text: &str, newline_isolated: bool, out: &mut Vec<u32>) {
    if !newline_isolated {
        return tokenize_piece(vocab, text, out);
    }
    let tokens: Vec<Vec<u32>> = text
        .par_split_inclusive('\n')
        .map(|line| {
            let mut tokens = Vec::new();
            tokenize_piece(vocab, line, &mut tokens);
            tokens
        })
        .collect();
    tokens.iter().for_each(|t| out.extend_from_slice(t));
}

/// One pass of the merge queue over `text`.
fn tokenize_piece(vocab: &Tokenizer, text: &str, out: &mut Vec<u32>) {
    let bytes = text.as_bytes();
    let mut symbols = Vec::new();
    let mut offs = 0;
    while offs < bytes.len() {
        let len = utf8_len(bytes[offs]).min(bytes.len() - offs);
        let index = symbols.len();
        offs += len;
        symbols.push(Symbol {
            start: offs - len,
            len,
            prev: index.checked_sub(1),
            next: (offs < bytes.len()).then_some(index + 1),
        });
    }
    let mut s = Session {
        vocab,
        text: bytes,
        symbols,
        queue: BinaryHeap::new(),
        rev_merge: HashMap::new(),
    };
    for i in 1..s.symbols.len() {
        s.try_add_bigram(Some(i - 1), Some(i));
    }
    while let Some(bigram) = s.queue.pop() {
        let (l, r) = (&s.symbols[bigram.left], &s.symbols[bigram.right]);
        if l.len == 0 || r.len == 0 || l.len + r.len != bigram.size {
            continue;
        }
        let right_next = r.next;
        let right_len = r.len;
        s.symbols[bigram.left].len += right_len;
        s.symbols[bigram.right].len = 0;
        s.symbols[bigram.left].next = right_next;
        if let Some(n) = right_next {
            s.symbols[n].prev = Some(bigram.left);
        }
        let prev = s.symbols[bigram.left].prev;
        s.try_add_bigram(prev, Some(bigram.left));
        s.try_add_bigram(Some(bigram.left), right_next);
    }
    let mut i = (!s.symbols.is_empty()).then_some(0);
    while let Some(at) = i {
        s.resegment(at, out);
        i = s.symbols[at].next;
    }
}

impl<'a> Session<'a> {
    fn piece(&self, at: usize) -> &'a [u8] {
        let sym = &self.symbols[at];
        &self.text[sym.start..sym.start + sym.len]
    }

    fn try_add_bigram(&mut self, left: Option<usize>, right: Option<usize>) {
        let (Some(left), Some(right)) = (left, right) else {
            return;
        };
        let start = self.symbols[left].start;
        let size = self.symbols[left].len + self.symbols[right].len;
        let text = &self.text[start..start + size];
        let Some(id) = std::str::from_utf8(text)
            .ok()
            .and_then(|t| self.vocab.id(t))
        else {
            return;
        };
        self.queue.push(Bigram {
            left,
            right,
            score: self.vocab.score(id),
            size,
        });
        self.rev_merge.insert(text, (left, right));
    }

    fn resegment(&self, at: usize, out: &mut Vec<u32>) {
        let text = self.piece(at);
        if let Some(id) = std::str::from_utf8(text)
            .ok()
            .and_then(|t| self.vocab.id(t))
        {
            out.push(id);
            return;
        }
        match self.rev_merge.get(text) {
            Some(&(l, r)) => {
                self.resegment(l, out);
                self.resegment(r, out);
            }
            None => out.extend(text.iter().map(|&b| self.byte_token(b))),
        }
    }

    /// `<0xXX>`, else the byte itself as a one-character token, else unknown (0).
    fn byte_token(&self, b: u8) -> u32 {
        self.vocab
            .id(&format!("<0x{b:02X}>"))
            .or_else(|| {
                std::str::from_utf8(&[b])
                    .ok()
                    .and_then(|s| self.vocab.id(s))
            })
            .unwrap_or(0)
    }
}
