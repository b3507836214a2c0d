//! One module per subcommand; each has an `Args` (clap) and a `run`.

pub mod convert;
pub mod inspect;
mod progress;
