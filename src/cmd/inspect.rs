//! `smelt inspect`: metadata and tensor table of a GGUF file, or of the GGUF a checkpoint folder
//! would convert to.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use arch::convert::plan;
use formats::gguf::{GgmlType, GgufFile, Metadata};
use formats::hf::Checkpoint;
use quantize::convert::{tensor_type, OutType};

/// Arguments of `smelt inspect`.
#[derive(clap::Args)]
pub struct Args {
    /// A .gguf file or a checkpoint folder.
    pub input: PathBuf,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
}

struct Row {
    name: String,
    dims: Vec<u64>,
    ty: String,
    bytes: u64,
}

/// Prints the report.
pub fn run(args: Args) -> Result<ExitCode> {
    let (metadata, rows) = if args.input.is_dir() {
        let ckpt = Checkpoint::open(&args.input)?;
        let out = OutType::native(&ckpt);
        let plan = plan(&ckpt, out.file_type())?;
        let rows = plan
            .tensors
            .iter()
            .map(|t| {
                let ty: GgmlType = tensor_type(t, out);
                let bytes = ty.bytes_for(t.dims.iter().product()).unwrap_or(0);
                Row {
                    name: t.name.clone(),
                    dims: t.dims.clone(),
                    ty: ty.name().into(),
                    bytes,
                }
            })
            .collect::<Vec<_>>();
        (plan.metadata, rows)
    } else {
        let file = GgufFile::open(&args.input)?;
        let rows = file
            .tensors
            .iter()
            .map(|t| Row {
                name: t.info.name.clone(),
                dims: t.info.dims.clone(),
                ty: t.info.ggml_type.name().into(),
                bytes: t.n_bytes,
            })
            .collect::<Vec<_>>();
        (file.metadata, rows)
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        print_json(&mut out, &metadata, &rows)?;
    } else {
        print_tables(&mut out, &metadata, &rows)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_json(out: &mut impl Write, metadata: &Metadata, rows: &[Row]) -> std::io::Result<()> {
    let md: serde_json::Map<String, serde_json::Value> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_json()))
        .collect();
    let tensors: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| serde_json::json!({"name": r.name, "shape": r.dims, "type": r.ty, "bytes": r.bytes}))
        .collect();
    writeln!(
        out,
        "{}",
        serde_json::json!({"metadata": md, "tensors": tensors})
    )
}

fn print_tables(out: &mut impl Write, metadata: &Metadata, rows: &[Row]) -> std::io::Result<()> {
    writeln!(out, "metadata ({} keys)", metadata.len())?;
    for (k, v) in metadata.iter() {
        writeln!(
            out,
            "  {k:<44} {:<8} {}",
            v.value_type().name(),
            v.summary(8)
        )?;
    }
    let total: u64 = rows.iter().map(|r| r.bytes).sum();
    writeln!(out, "tensors ({}, {total} bytes)", rows.len())?;
    for r in rows {
        let shape = r
            .dims
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(" × ");
        writeln!(
            out,
            "  {:<36} {:<8} {:>16} {:>12}",
            r.name, r.ty, shape, r.bytes
        )?;
    }
    Ok(())
}
