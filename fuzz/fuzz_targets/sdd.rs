//! A teacher dataset (`.sdd`): header, then every chunk decoded.
#![no_main]
#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let path = common::file("d.sdd", data);
    if let Ok(mut reader) = distill::sdd::SddReader::open(&path) {
        while let Ok(Some(chunk)) = reader.next_chunk() {
            std::hint::black_box(chunk);
        }
    }
});
