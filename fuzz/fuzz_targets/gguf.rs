//! The GGUF reader, then every tensor it lists read through.
#![no_main]
#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let path = common::file("m.gguf", data);
    if let Ok(f) = formats::gguf::GgufFile::open(&path) {
        let mut sum = 0u64;
        for t in &f.tensors {
            sum += f.data(t).iter().map(|&b| b as u64).sum::<u64>();
        }
        std::hint::black_box(sum);
        let _ = formats::digest::model_sha256(&f);
    }
});
