//! llama-perplexity's KL-divergence base file: header, tokens, then every chunk's rows.
#![no_main]
#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let path = common::file("base.kld", data);
    if let Ok(mut base) = formats::kld_base::BaseReader::open(&path) {
        for _ in 0..base.n_chunks {
            let Ok(rows) = base.next_chunk() else { break };
            for row in rows.chunks_exact(formats::kld_base::row_slots(base.n_vocab)) {
                std::hint::black_box(formats::kld_base::decode_row(row, base.n_vocab));
            }
        }
    }
});
