//! The plan IR: what the runtime executes, `pexc plan` shows and `plan.json` holds. Every
//! value is resolved (presets expanded, `with` updates applied, defaults filled in, taps
//! as 0-based block indices, work in steps). Constructor arguments stay generic (name ->
//! value, in the catalogue's order): the catalogue is the one place that knows a
//! constructor's signature, and the runtime reads arguments by those names.
//!
//! The first keys of `Plan`, `StagePlan` and `PhasePlan` are the normative JSON plan of
//! language.md section 3; everything after them is an extension.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

/// A whole experiment: its stages in a topological order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub stages: Vec<StagePlan>,
    /// Total training FLOPs.
    pub train_flops: f64,
    /// The root file, as the user named it.
    pub source: String,
}

impl Plan {
    pub fn stage(&self, name: &str) -> Option<&StagePlan> {
        self.stages.iter().find(|s| s.name == name)
    }
}

/// What a stage does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    /// Trains models.
    Train,
    /// A data engine: runs a captioner over its data and writes a caption dataset.
    Caption,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StagePlan {
    pub name: String,
    /// Stages this one needs, in first-reference order.
    pub after: Vec<String>,
    pub phases: Vec<PhasePlan>,
    /// Training FLOPs of all phases (inference FLOPs for a caption stage).
    pub train_flops: f64,
    pub kind: StageKind,
    /// `init: stage`: models of the same name start from that stage's result.
    pub init: Option<String>,
    pub seed: u64,
    pub devices: u64,
    /// `skip_nonfinite`: steps with a non-finite loss or gradient that may be skipped
    /// before the stage stops (0: stop at the first). Absent from the JSON when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skip_nonfinite: u64,
    /// Every model the stage holds (trained in some phase, or frozen), not teachers.
    pub models: Vec<ModelPlan>,
    pub teachers: Vec<TeacherPlan>,
    pub exports: Vec<ExportPlan>,
    /// A caption stage's captioner (`captioner(..)` with its models by name).
    pub caption: Option<Ctor>,
    /// Datasets the stage writes, by name (`engine.captions`).
    pub writes: Vec<String>,
    /// Content hash of everything that determines the stage's result: its resolved plan
    /// (costs aside) and the hashes of the stages it depends on. Hex SHA-256.
    pub hash: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl StagePlan {
    pub fn model(&self, name: &str) -> Option<&ModelPlan> {
        self.models.iter().find(|m| m.name == name)
    }

    pub fn total_steps(&self) -> u64 {
        self.phases.iter().map(|p| p.steps).sum()
    }
}

/// What a model is for, from its constructor's tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Vision,
    Text,
    Decoder,
    Projector,
}

/// One model instance of a stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelPlan {
    /// The name the stage knows it by: `vision`, or `lang.vision` for another stage's model.
    pub name: String,
    pub role: Role,
    /// The constructor and all its arguments.
    pub config: Ctor,
    pub init: ModelInit,
    /// Parameter count.
    pub params: u64,
}

/// Where a model's weights come from when the stage starts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum ModelInit {
    /// Random initialisation from the stage's seed.
    Random,
    /// A checkpoint file (the model's `weights`).
    Weights { path: String },
    /// The result of an earlier stage.
    Stage { stage: String, model: String },
}

/// A teacher: frozen models, or mask logits read from disk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TeacherPlan {
    pub name: String,
    /// `frozen` or `mask_logits`.
    pub kind: String,
    /// The frozen models (a vision tower, and its text tower for a frozen CLIP).
    pub models: Vec<ModelPlan>,
    /// The tapped block of the (first) frozen model, 0-based; `None` for its output.
    pub block: Option<u64>,
    /// `mask_logits`: its arguments (`source`, `grid`).
    pub args: Option<Ctor>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportPlan {
    pub name: String,
    /// The stage's model it exports.
    pub model: String,
}

/// One phase of a stage (a stage without phases has one, named after the stage).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhasePlan {
    pub name: String,
    /// Image side in pixels.
    pub resolution: u64,
    /// Global batch (clips for video data).
    pub batch: u64,
    /// Optimizer steps.
    pub steps: u64,
    /// Samples seen: steps x batch.
    pub samples: u64,
    /// Patch tokens plus CLS of the phase's vision tower at its resolution.
    pub tokens_per_image: u64,
    pub train_flops: f64,
    /// How the unit of work became steps: `"steps"`, or the conversion and its rounding.
    pub work: String,
    /// The stage-global index of the phase's first step.
    pub first_step: u64,
    /// Frames per clip, for video data with frame pooling.
    pub frames: Option<u64>,
    pub data: Option<DataPlan>,
    pub optimizer: Option<Ctor>,
    /// The learning-rate schedule segments that cover this phase, in stage-global steps.
    pub lr: Vec<LrSegment>,
    pub loss: Vec<LossPlan>,
    /// Models trained in this phase.
    pub train: Vec<String>,
    /// Models of the stage held fixed in this phase.
    pub frozen: Vec<String>,
    pub regularize: Vec<Ctor>,
    pub accumulate: u64,
    pub clip_grad: Option<f64>,
    /// `fp32` or `bf16`.
    pub precision: String,
    /// Forward FLOPs per sample (every model and teacher that runs).
    pub forward_flops_per_sample: f64,
    pub memory: Memory,
}

/// The data of a phase: a constructor, or a dataset an earlier stage writes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DataPlan {
    Stage { stage: String, dataset: String },
    Source(Ctor),
}

/// One learning-rate segment: from step `start` (inclusive) to `end` (exclusive), the rate
/// goes from `from` to `to` along `shape`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrSegment {
    /// `warmup` (linear), `cosine`, `linear` or `constant`.
    pub shape: String,
    pub start: u64,
    pub end: u64,
    pub from: f64,
    pub to: f64,
}

impl LrSegment {
    /// The rate at stage-global step `step` within the segment.
    pub fn at(&self, step: u64) -> f64 {
        let len = self.end.saturating_sub(self.start).max(1) as f64;
        let t = (step.saturating_sub(self.start) as f64 / len).clamp(0.0, 1.0);
        match self.shape.as_str() {
            "cosine" => {
                self.to + (self.from - self.to) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
            "constant" => self.from,
            _ => self.from + (self.to - self.from) * t,
        }
    }
}

/// One weighted loss term.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossPlan {
    pub weight: f64,
    /// The constructor and its arguments; taps and teachers resolved.
    pub term: Ctor,
}

/// A memory estimate per device.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    /// Parameters of every model and teacher of the phase.
    pub params: u64,
    /// Of which trained.
    pub trainable: u64,
    /// Samples per device per forward pass: batch / devices / accumulate.
    pub micro_batch: u64,
    pub fp32: MemoryBytes,
    pub bf16: MemoryBytes,
}

/// Bytes per device.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryBytes {
    pub params: f64,
    pub grads: f64,
    pub optimizer: f64,
    pub activations_per_sample: f64,
    pub activations: f64,
    pub total: f64,
}

/// A constructor with its arguments (omitted optional arguments absent).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ctor {
    pub ctor: String,
    pub args: IndexMap<String, Arg>,
}

impl Ctor {
    pub fn arg(&self, name: &str) -> Option<&Arg> {
        self.args.get(name)
    }

    pub fn int(&self, name: &str) -> Option<i64> {
        match self.arg(name)? {
            Arg::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn float(&self, name: &str) -> Option<f64> {
        match self.arg(name)? {
            Arg::Int(i) => Some(*i as f64),
            Arg::Float(f) => Some(*f),
            _ => None,
        }
    }

    pub fn bool(&self, name: &str) -> Option<bool> {
        match self.arg(name)? {
            Arg::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        match self.arg(name)? {
            Arg::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn call(&self, name: &str) -> Option<&Ctor> {
        match self.arg(name)? {
            Arg::Call(c) => Some(c),
            _ => None,
        }
    }

    pub fn list(&self, name: &str) -> Option<&[Arg]> {
        match self.arg(name)? {
            Arg::List(items) => Some(items),
            _ => None,
        }
    }

    /// A pair of numbers: `betas`, `grid`, `block`.
    pub fn pair(&self, name: &str) -> Option<(f64, f64)> {
        match self.list(name)? {
            [a, b] => Some((a.as_f64()?, b.as_f64()?)),
            _ => None,
        }
    }
}

/// An argument value. JSON: numbers, strings, booleans, arrays; objects for calls
/// (`{"ctor", "args"}`), taps (`{"model", "block", "frozen"}`), models (`{"model"}`) and
/// teachers (`{"teacher"}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Arg {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// Lists and tuples alike.
    List(Vec<Arg>),
    Call(Ctor),
    Tap(TapPlan),
    Model {
        model: String,
    },
    Teacher {
        teacher: String,
    },
    Record(IndexMap<String, Arg>),
}

impl Arg {
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Arg::Int(i) => Some(*i as f64),
            Arg::Float(f) => Some(*f),
            _ => None,
        }
    }
}

/// An intermediate output: block `block` (0-based) of the stage's model `model`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TapPlan {
    pub model: String,
    pub block: u64,
    /// A tap of a frozen copy.
    pub frozen: bool,
}
