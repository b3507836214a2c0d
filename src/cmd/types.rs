//! `smelt types`: the tensor types (block size, bits per weight, what smelt can do with them) and
//! the file types `smelt quantize` accepts.

use std::process::ExitCode;

use anyhow::Result;
use formats::gguf::GgmlType;
use quantize::mixture::{always_requires_imatrix, FILE_TYPES};
use quantize::types::{can_dequantize, can_quantize, uses_importance};

/// Arguments of `smelt types`.
#[derive(clap::Args)]
pub struct Args {
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// Prints the tables.
pub fn run(args: Args) -> Result<ExitCode> {
    let types: Vec<GgmlType> = GgmlType::all().filter(|t| can_dequantize(*t)).collect();
    let bpw = |t: GgmlType| t.block_bytes() as f64 * 8.0 / t.block_size() as f64;
    if args.json {
        let tensor_types: Vec<_> = types
            .iter()
            .map(|&t| {
                serde_json::json!({
                    "name": t.name(), "id": t.id(), "block_size": t.block_size(),
                    "block_bytes": t.block_bytes(), "bpw": bpw(t), "quantize": can_quantize(t),
                    "dequantize": true, "uses_imatrix": uses_importance(t),
                    "needs_imatrix": always_requires_imatrix(t),
                })
            })
            .collect();
        let file_types: Vec<_> = FILE_TYPES
            .iter()
            .map(|f| serde_json::json!({"name": f.name, "file_type": f.id, "default_type": f.default_type.name()}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"tensor_types": tensor_types, "file_types": file_types})
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<8} {:>3} {:>6} {:>6} {:>7}  {:<8} {:<8}",
        "type", "id", "block", "bytes", "bpw", "encode", "imatrix"
    );
    for t in types {
        let imatrix = if always_requires_imatrix(t) {
            "required"
        } else if uses_importance(t) {
            "used"
        } else {
            "-"
        };
        println!(
            "{:<8} {:>3} {:>6} {:>6} {:>7.4}  {:<8} {:<8}",
            t.name(),
            t.id(),
            t.block_size(),
            t.block_bytes(),
            bpw(t),
            if can_quantize(t) { "yes" } else { "no" },
            imatrix
        );
    }
    println!();
    println!(
        "file types for `smelt quantize`: {}",
        FILE_TYPES
            .iter()
            .map(|f| f.name)
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(ExitCode::SUCCESS)
}
