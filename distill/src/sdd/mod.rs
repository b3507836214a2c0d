//! Teacher datasets (`.sdd`): per scored position of a text, the teacher's most likely tokens
//! with their log-probabilities, the mass of the rest, and the token the text continues with —
//! entropy-coded, appended chunk by chunk, resumable, read chunk by chunk.

mod coder;
mod file;
mod row;
mod tail;

pub use file::{partial_path, Chunk, Header, Opened, SddReader, SddWriter, MAX_TAIL};
pub use row::{log_prob_of, Distribution, Selection, TeacherRow, LEVELS};
