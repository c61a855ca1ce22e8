//! Checked values: what the checker evaluates every expression to, and what lowering
//! consumes. Each value remembers where it came from (file and span, or a default).

use pexc_stdlib::{Constructor, Kind, Tag};
use std::sync::Arc;

use crate::source::{FileId, Span};

/// Index of a definition (`let`, `model`, `data`) in `Checked::defs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DefId(pub usize);

/// Where a value was set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provenance {
    /// Written at its span.
    Written,
    /// The catalogue's default of an argument of the call at its span.
    Default,
    /// Written in a `with { .. }` update at its span.
    With,
    /// A `--set` override (its file is the override's own source).
    Set,
}

/// A value with its origin.
#[derive(Clone, Debug, PartialEq)]
pub struct Val {
    pub value: Value,
    pub file: FileId,
    pub span: Span,
    pub provenance: Provenance,
}

impl Val {
    pub fn new(value: Value, file: FileId, span: Span) -> Self {
        Val {
            value,
            file,
            span,
            provenance: Provenance::Written,
        }
    }

    pub fn invalid(file: FileId, span: Span) -> Self {
        Val::new(Value::Invalid, file, span)
    }

    pub fn is_invalid(&self) -> bool {
        matches!(self.value, Value::Invalid)
    }

    /// The number, when it is one.
    pub fn as_f64(&self) -> Option<f64> {
        self.value.as_f64()
    }

    pub fn as_int(&self) -> Option<i64> {
        match self.value {
            Value::Int(i) => Some(i),
            Value::Frac(n, 1) => Some(n),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    /// An exact fraction `n / d`, reduced, `d > 0`.
    Frac(i64, i64),
    Str(String),
    Bool(bool),
    List(Vec<Val>),
    Tuple(Vec<Val>),
    Record(Vec<(String, Val)>),
    /// A constructor applied to its arguments (defaults filled in).
    Call(Arc<CallValue>),
    /// A weighted sum of loss terms.
    Loss(Vec<LossTerm>),
    /// A declared model, by identity.
    Model(ModelRef),
    /// A stage, by name.
    Stage(String),
    /// A dataset a stage writes (the data engine's captions): `engine.captions`.
    StageData {
        stage: String,
        name: String,
    },
    /// An intermediate output of a model.
    Tap(Box<Tap>),
    /// A teacher declared in the current stage, by name.
    Teacher(String),
    /// The value of an expression that already had an error: accepted everywhere, so
    /// that one mistake gives one diagnostic.
    Invalid,
}

impl Value {
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Int(i) => Some(i as f64),
            Value::Float(f) => Some(f),
            Value::Frac(n, d) => Some(n as f64 / d as f64),
            _ => None,
        }
    }

    /// The value in words, for "found ...".
    pub fn described(&self) -> String {
        match self {
            Value::Int(i) => format!("the integer {i}"),
            Value::Float(f) => format!("the number {f}"),
            Value::Frac(n, d) => format!("the fraction {n}/{d}"),
            Value::Str(s) => format!("the string \"{s}\""),
            Value::Bool(b) => format!("`{b}`"),
            Value::List(_) => "a list".into(),
            Value::Tuple(items) => format!("a tuple of {}", items.len()),
            Value::Record(_) => "a record".into(),
            Value::Call(c) => format!("{} (`{}`)", c.ctor.kind.described(), c.ctor.name),
            Value::Loss(_) => "a loss".into(),
            Value::Model(r) => format!("model `{}`", r.display()),
            Value::Stage(s) => format!("stage `{s}`"),
            Value::StageData { stage, name } => format!("the dataset `{stage}.{name}`"),
            Value::Tap(t) => format!("the tap `{}`", t.display()),
            Value::Teacher(t) => format!("teacher `{t}`"),
            Value::Invalid => "an invalid value".into(),
        }
    }
}

/// A constructor with all its arguments, in the catalogue's order. Omitted optional
/// arguments without a default are absent.
#[derive(Clone, Debug, PartialEq)]
pub struct CallValue {
    pub ctor: &'static Constructor,
    pub args: Vec<(&'static str, Val)>,
}

impl CallValue {
    pub fn arg(&self, name: &str) -> Option<&Val> {
        self.args.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    pub fn int(&self, name: &str) -> Option<i64> {
        self.arg(name).and_then(Val::as_int)
    }

    pub fn is(&self, kind: Kind) -> bool {
        self.ctor.kind == kind
    }

    pub fn has_tag(&self, tag: Tag) -> bool {
        self.ctor.has_tag(tag)
    }
}

/// `weight * term`
#[derive(Clone, Debug, PartialEq)]
pub struct LossTerm {
    pub weight: f64,
    pub term: CallValue,
    pub file: FileId,
    pub span: Span,
}

/// A reference to a declared model.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelRef {
    /// `vision`: the definition itself (random init, or its `weights`).
    Def(DefId, String),
    /// `core.vision`: the model as stage `core` leaves it. `def` is the declaration
    /// behind it, when it resolves.
    StageOutput {
        stage: String,
        name: String,
        def: Option<DefId>,
    },
}

impl ModelRef {
    pub fn def(&self) -> Option<DefId> {
        match self {
            ModelRef::Def(d, _) => Some(*d),
            ModelRef::StageOutput { def, .. } => *def,
        }
    }

    pub fn display(&self) -> String {
        match self {
            ModelRef::Def(_, n) => n.clone(),
            ModelRef::StageOutput { stage, name, .. } => format!("{stage}.{name}"),
        }
    }
}

/// Which block of a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    /// The output of the last block.
    Last,
    /// `layer(k)`: 1-based, negative counts from the end (-1 is the last block).
    Index(i64),
}

/// An intermediate output.
#[derive(Clone, Debug, PartialEq)]
pub struct Tap {
    pub model: ModelRef,
    /// A tap of a frozen copy (a teacher).
    pub frozen: bool,
    pub layer: Layer,
}

impl Tap {
    pub fn display(&self) -> String {
        let base = if self.frozen {
            format!("frozen({})", self.model.display())
        } else {
            self.model.display()
        };
        match self.layer {
            Layer::Last => format!("{base}.last"),
            Layer::Index(k) => format!("{base}.layer({k})"),
        }
    }

    /// The 0-based block index in a model of `depth` blocks, if in range.
    pub fn block_index(&self, depth: i64) -> Option<i64> {
        match self.layer {
            Layer::Last => Some(depth - 1),
            Layer::Index(k) if k >= 1 && k <= depth => Some(k - 1),
            Layer::Index(k) if k < 0 && -k <= depth => Some(depth + k),
            Layer::Index(_) => None,
        }
    }
}
