//! A checkpoint folder: config.json and model.safetensors (the input split at a `--8<--` line),
//! opened, every tensor read.
#![no_main]
#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (config, weights) = split(data);
    common::file("config.json", config);
    common::file("model.safetensors", weights);
    if let Ok(ckpt) = formats::hf::Checkpoint::open(common::scratch()) {
        for t in &ckpt.tensors {
            std::hint::black_box(ckpt.bytes(t));
        }
    }
});

/// Splits the input at the first occurrence of a separator line, so one input can fill two
/// files (a config and a weights file, say).
fn split(data: &[u8]) -> (&[u8], &[u8]) {
    const SEP: &[u8] = b"\n--8<--\n";
    match data.windows(SEP.len()).position(|w| w == SEP) {
        Some(at) => (&data[..at], &data[at + SEP.len()..]),
        None => (data, &[]),
    }
}
