//! The release recipe parser (the source folder it names exists: the scratch folder's `src`).
#![no_main]
#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = std::fs::create_dir_all(common::scratch().join("src"));
    let path = common::file("recipe.toml", data);
    let _ = release::recipe::Recipe::load(&path, Default::default());
});
