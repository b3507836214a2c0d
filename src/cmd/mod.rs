//! One module per subcommand; each has an `Args` (clap) and a `run`.

pub mod convert;
pub mod dev;
pub mod inspect;
mod progress;
pub mod quantize;
pub mod types;
