//! The types of pex values, as the checker and the runtime see them (language.md section 2).

use std::fmt;

/// What a constructor builds. Each kind is a type of its own; a value of one kind is never
/// accepted where another is expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Model,
    Data,
    Schedule,
    Optimizer,
    Loss,
    Augment,
    Regularizer,
    Teacher,
    Pool,
    PosEmb,
    FramePool,
    Captioner,
    Precision,
}

impl Kind {
    /// The kind in words, with its article: "a model", "an optimizer".
    pub fn described(self) -> &'static str {
        match self {
            Kind::Model => "a model",
            Kind::Data => "a data source",
            Kind::Schedule => "a learning-rate schedule",
            Kind::Optimizer => "an optimizer",
            Kind::Loss => "a loss",
            Kind::Augment => "an augmentation",
            Kind::Regularizer => "a regularizer",
            Kind::Teacher => "a teacher",
            Kind::Pool => "a pooling",
            Kind::PosEmb => "a position embedding",
            Kind::FramePool => "a frame pooling",
            Kind::Captioner => "a captioner",
            Kind::Precision => "a precision",
        }
    }
}

/// The type of an argument, a field or a value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Ty {
    /// An integer.
    Int,
    /// An integer amount of work or data: `2K`, `5.4B`, `32Ki`.
    Count,
    /// A real number; integers and fractions are accepted.
    Float,
    /// A real number written as a fraction or a decimal: `1/16`, `0.4`.
    Fraction,
    Str,
    /// A file or directory, relative to the file that names it.
    Path,
    Bool,
    List(&'static Ty),
    Tuple(&'static [Ty]),
    Record,
    /// A value built by a constructor of this kind.
    Of(Kind),
    /// A declared model, by name (`vision`) or as a stage's output (`core.vision`).
    ModelName,
    /// A model name, or a stage standing for all the models it trains (`frozen(core)`).
    ModelOrStage,
    /// A stage, by name.
    Stage,
    /// An intermediate output: `vision.last`, `vision.layer(-3)`, a teacher's layer.
    Tap,
    /// A teacher declared in the stage, or a tap of one.
    TeacherTap,
}

impl Ty {
    /// The type in words, with its article.
    pub fn described(&self) -> String {
        match self {
            Ty::Int => "an integer".into(),
            Ty::Count => "a count (an integer such as 2K or 32Ki)".into(),
            Ty::Float => "a number".into(),
            Ty::Fraction => "a fraction (such as 1/16 or 0.4)".into(),
            Ty::Str => "a string".into(),
            Ty::Path => "a path (a string)".into(),
            Ty::Bool => "a boolean".into(),
            Ty::List(t) => format!("a list of {}", plural(&t.described())),
            Ty::Tuple(ts) => {
                let parts: Vec<String> = ts.iter().map(|t| t.short()).collect();
                format!("a tuple ({})", parts.join(", "))
            }
            Ty::Record => "a record".into(),
            Ty::Of(k) => k.described().into(),
            Ty::ModelName => "a model name".into(),
            Ty::ModelOrStage => "a model name or a stage name".into(),
            Ty::Stage => "a stage name".into(),
            Ty::Tap => "a tap (such as `vision.last` or `vision.layer(-3)`)".into(),
            Ty::TeacherTap => "a teacher".into(),
        }
    }

    /// The type without article, for tuples.
    pub fn short(&self) -> String {
        let d = self.described();
        d.strip_prefix("an ")
            .or_else(|| d.strip_prefix("a "))
            .unwrap_or(&d)
            .to_string()
    }
}

fn plural(described: &str) -> String {
    let bare = described
        .strip_prefix("an ")
        .or_else(|| described.strip_prefix("a "))
        .unwrap_or(described);
    // "a count (an integer ...)" -> "counts (an integer ...)"
    match bare.split_once(' ') {
        Some((head, rest)) if rest.starts_with('(') => format!("{}s {rest}", head),
        _ => format!("{bare}s"),
    }
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.described())
    }
}
