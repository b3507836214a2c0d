//! What a release run produced: the content of `report.json`, which the documents
//! ([`crate::report`]) and the plot are rendered from.

use serde::Serialize;

use crate::quant::TypeOutcome;
use crate::recipe;
use crate::stages::{StageRun, TeacherScore};

/// Content hashes of the inputs.
#[derive(Debug, Clone, Serialize)]
pub struct InputHashes {
    /// The checkpoint folder or GGUF.
    pub source_sha256: String,
    /// The calibration text.
    pub calibration_sha256: Option<String>,
    /// The evaluation text.
    pub evaluation_sha256: String,
}

/// The shared stages of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Stages {
    /// Converting a checkpoint folder to the teacher GGUF.
    pub teacher: StageRun,
    /// Collecting the imatrix (absent without calibration text).
    pub imatrix: Option<StageRun>,
    /// The teacher's pass over the evaluation text.
    pub kld_base: StageRun,
}

/// Everything a run produced: the content of `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Release {
    /// smelt's version.
    pub smelt_version: &'static str,
    /// Release name.
    pub name: String,
    /// The source as the recipe named it.
    pub source: String,
    /// `general.architecture` of the teacher.
    pub architecture: String,
    /// The model card's publishing facts.
    pub card: recipe::Card,
    /// The evaluation text's file name.
    pub evaluation: String,
    /// The calibration text's file name.
    pub calibration: Option<String>,
    /// Context size.
    pub ctx: usize,
    /// The teacher's figures on the evaluation text.
    pub teacher: TeacherScore,
    /// Input hashes.
    pub inputs: InputHashes,
    /// Shared stages.
    pub stages: Stages,
    /// Every type, in recipe order.
    pub types: Vec<TypeOutcome>,
    /// Every type passed its gates.
    pub passed: bool,
    /// Wall-clock seconds of the run.
    pub seconds: f64,
}
