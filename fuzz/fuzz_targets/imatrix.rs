//! The imatrix readers: llama-imatrix's GGUF format (input starting with `GGUF`) and the legacy
//! `.dat` format.
#![no_main]
#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let path = common::file("imatrix.dat", data);
    let _ = formats::imatrix::ImatrixFile::open(&path);
});
