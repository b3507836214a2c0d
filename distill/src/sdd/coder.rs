//! An adaptive binary range coder (LZMA's carry-propagating design) and the integer models the
//! dataset rows are written with.
//!
//! Why entropy coding: a llama.cpp KL-divergence base stores every vocabulary entry of every row
//! in 16 bits. A teacher's top tokens need far fewer bits once each bit is coded with a
//! probability learnt from the rows before it: ids repeat (a small model's favourite tokens),
//! log-probability gaps between neighbours in the sorted list are small, and the token the text
//! continues with is usually one of the first few entries.

/// Probability precision of a [`Bit`] (LZMA's 11 bits).
const PROB_BITS: u32 = 11;
const PROB_ONE: u16 = 1 << PROB_BITS;
/// Adaptation speed: each coded bit moves its probability 1/2^MOVE of the way.
const MOVE_BITS: u32 = 4;
const TOP: u32 = 1 << 24;

/// One adaptive binary probability (of a 0), shared by encoder and decoder.
#[derive(Clone, Copy)]
pub struct Bit(u16);

impl Default for Bit {
    fn default() -> Self {
        Bit(PROB_ONE / 2)
    }
}

impl Bit {
    fn update(&mut self, bit: bool) {
        if bit {
            self.0 -= self.0 >> MOVE_BITS;
        } else {
            self.0 += (PROB_ONE - self.0) >> MOVE_BITS;
        }
    }
}

/// Writes bits into a byte buffer.
pub struct Encoder {
    low: u64,
    range: u32,
    cache: u8,
    cache_size: u64,
    out: Vec<u8>,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder {
            low: 0,
            range: u32::MAX,
            cache: 0,
            cache_size: 1,
            out: Vec::new(),
        }
    }
}

impl Encoder {
    /// Codes `bit` with the adaptive probability `p`.
    pub fn bit(&mut self, p: &mut Bit, bit: bool) {
        let bound = (self.range >> PROB_BITS) * p.0 as u32;
        if bit {
            self.low += bound as u64;
            self.range -= bound;
        } else {
            self.range = bound;
        }
        p.update(bit);
        while self.range < TOP {
            self.range <<= 8;
            self.shift_low();
        }
    }

    fn shift_low(&mut self) {
        if (self.low as u32) < 0xFF00_0000 || (self.low >> 32) != 0 {
            let carry = (self.low >> 32) as u8;
            let mut byte = self.cache;
            loop {
                self.out.push(byte.wrapping_add(carry));
                byte = 0xFF;
                self.cache_size -= 1;
                if self.cache_size == 0 {
                    break;
                }
            }
            self.cache = ((self.low >> 24) & 0xFF) as u8;
        }
        self.cache_size += 1;
        self.low = (self.low & 0x00FF_FFFF) << 8;
    }

    /// Flushes the coder and returns the bytes.
    pub fn finish(mut self) -> Vec<u8> {
        for _ in 0..5 {
            self.shift_low();
        }
        self.out
    }
}

/// Reads bits from bytes an [`Encoder`] wrote; reading past the end yields zero bytes (a
/// truncated stream decodes to garbage, which the record checksum catches first).
pub struct Decoder<'a> {
    code: u32,
    range: u32,
    input: &'a [u8],
}

impl<'a> Decoder<'a> {
    /// Starts decoding `input`.
    pub fn new(input: &'a [u8]) -> Decoder<'a> {
        let mut d = Decoder {
            code: 0,
            range: u32::MAX,
            input,
        };
        for _ in 0..5 {
            d.code = (d.code << 8) | d.next_byte() as u32;
        }
        d
    }

    fn next_byte(&mut self) -> u8 {
        match self.input.split_first() {
            Some((&b, rest)) => {
                self.input = rest;
                b
            }
            None => 0,
        }
    }

    /// Decodes one bit coded with the adaptive probability `p`.
    pub fn bit(&mut self, p: &mut Bit) -> bool {
        let bound = (self.range >> PROB_BITS) * p.0 as u32;
        let bit = self.code >= bound;
        if bit {
            self.code -= bound;
            self.range -= bound;
        } else {
            self.range = bound;
        }
        p.update(bit);
        while self.range < TOP {
            self.range <<= 8;
            self.code = (self.code << 8) | self.next_byte() as u32;
        }
        bit
    }
}

/// Either side of the coder, so each model is written once for both directions.
pub trait BitIo {
    /// Codes `bit` (encoder) or returns the decoded bit (decoder; `bit` is ignored).
    fn code(&mut self, p: &mut Bit, bit: bool) -> bool;
}

impl BitIo for Encoder {
    fn code(&mut self, p: &mut Bit, bit: bool) -> bool {
        self.bit(p, bit);
        bit
    }
}

impl BitIo for Decoder<'_> {
    fn code(&mut self, p: &mut Bit, _bit: bool) -> bool {
        self.bit(p)
    }
}

/// A symbol below 2^bits coded most significant bit first, each bit's probability conditioned
/// on the bits before it (a binary tree of [`Bit`]s): learns any distribution over the symbols.
#[derive(Clone)]
pub struct SymbolModel {
    bits: u32,
    tree: Vec<Bit>,
}

impl SymbolModel {
    /// A model for symbols `0..2^bits`.
    pub fn new(bits: u32) -> SymbolModel {
        SymbolModel {
            bits,
            tree: vec![Bit::default(); 1 << bits],
        }
    }

    /// Codes `symbol` (encoder) or returns the decoded one (decoder).
    pub fn code(&mut self, io: &mut impl BitIo, symbol: u32) -> u32 {
        let mut node = 1usize;
        for i in (0..self.bits).rev() {
            let bit = io.code(&mut self.tree[node], (symbol >> i) & 1 == 1);
            node = (node << 1) | bit as usize;
        }
        node as u32 - (1 << self.bits)
    }
}

/// Bit-length classes of a [`CountModel`]: values up to `u32::MAX − 1`.
const MAX_CLASS: usize = 32;

/// A non-negative integer as an adaptive Elias-gamma code: the bit length of `v + 1` in unary,
/// then its remaining bits, all with learnt probabilities (small values cost a bit or two).
#[derive(Clone)]
pub struct CountModel {
    class: [Bit; MAX_CLASS],
    mantissa: Vec<Bit>,
}

impl Default for CountModel {
    fn default() -> Self {
        CountModel {
            class: [Bit::default(); MAX_CLASS],
            mantissa: vec![Bit::default(); MAX_CLASS * 3],
        }
    }
}

impl CountModel {
    /// Codes `value` (below `u32::MAX`; encoder) or returns the decoded one (decoder). The two
    /// highest mantissa bits of each class have their own probabilities, lower ones share one.
    pub fn code(&mut self, io: &mut impl BitIo, value: u32) -> u32 {
        let v = value as u64 + 1;
        let class = 63 - v.leading_zeros() as usize;
        let mut c = 0;
        while c < MAX_CLASS - 1 && io.code(&mut self.class[c], c < class) {
            c += 1;
        }
        let mut out = 1u64;
        for i in (0..c).rev() {
            let slot = 3 * c + (c - 1 - i).min(2);
            let bit = io.code(&mut self.mantissa[slot], (v >> i) & 1 == 1);
            out = (out << 1) | bit as u64;
        }
        (out - 1) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values through every model come back, and a skewed source compresses.
    #[test]
    fn round_trip_and_compression() {
        let symbols: Vec<u32> = (0..20_000u32)
            .map(|i| if i % 7 == 0 { i % 300 } else { i % 3 })
            .collect();
        let counts: Vec<u32> = (0..20_000u32)
            .map(|i| [0, 1, 0, 3, 70_000, 0, 2][i as usize % 7])
            .collect();
        let mut enc = Encoder::default();
        let (mut s, mut c) = (SymbolModel::new(9), CountModel::default());
        for (&a, &b) in symbols.iter().zip(&counts) {
            s.code(&mut enc, a);
            c.code(&mut enc, b);
        }
        c.code(&mut enc, u32::MAX - 1);
        let bytes = enc.finish();
        assert!(bytes.len() < 20_000 * 2, "{} bytes", bytes.len());
        let mut dec = Decoder::new(&bytes);
        let (mut s, mut c) = (SymbolModel::new(9), CountModel::default());
        for (&a, &b) in symbols.iter().zip(&counts) {
            assert_eq!(s.code(&mut dec, 0), a);
            assert_eq!(c.code(&mut dec, 0), b);
        }
        assert_eq!(c.code(&mut dec, 0), u32::MAX - 1);
    }
}
