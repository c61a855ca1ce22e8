//! Every diagnostic of the front end, as data. Each variant has a stable code, a primary
//! span, secondary spans where another place is involved, and help. The source text is
//! attached one layer up (the CLI), from the `FileId` of the `Problem`.

use miette::{Diagnostic, LabeledSpan, SourceSpan};
use thiserror::Error;

use crate::source::FileId;

#[derive(Debug, Error, Diagnostic, Clone)]
pub enum Error {
    // ------------------------------------------------------------------ syntax
    #[error("{message}")]
    #[diagnostic(code(pex::syntax))]
    Syntax {
        message: String,
        label: String,
        #[label("{label}")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("the file is not valid UTF-8: byte 0x{byte:02x} at offset {offset}")]
    #[diagnostic(
        code(pex::syntax::utf8),
        help("pex files are UTF-8 text; re-save the file as UTF-8")
    )]
    NotUtf8 {
        byte: u8,
        offset: usize,
        #[label("not UTF-8")]
        span: SourceSpan,
    },

    #[error("more than {limit} operators in one expression")]
    #[diagnostic(
        code(pex::syntax::too_long),
        help("split the expression with `let` definitions")
    )]
    TooManyOperators {
        limit: usize,
        #[label("limit reached here")]
        span: SourceSpan,
    },

    #[error("brackets nested more than {limit} deep")]
    #[diagnostic(
        code(pex::syntax::nesting),
        help("name the inner values with `let` to flatten the expression")
    )]
    TooDeep {
        limit: usize,
        #[label("nesting limit reached here")]
        span: SourceSpan,
    },

    #[error("the file is larger than the limit of {limit} bytes (read: {bytes})")]
    #[diagnostic(
        code(pex::syntax::file_size),
        help("split the experiment into modules imported with `use \"file.pex\"::{{..}}`")
    )]
    FileTooLarge {
        bytes: usize,
        limit: usize,
        #[label("file starts here")]
        span: SourceSpan,
    },

    #[error("this integer does not fit in 64 bits")]
    #[diagnostic(
        code(pex::syntax::number),
        help("the largest integer is 9223372036854775807 (about 9.2e18)")
    )]
    NumberTooLarge {
        #[label("too large")]
        span: SourceSpan,
    },

    // ------------------------------------------------------------------ imports
    #[error("cannot find module file `{path}`")]
    #[diagnostic(code(pex::import::missing_file))]
    ImportMissingFile {
        path: String,
        #[label("no file at {resolved}")]
        span: SourceSpan,
        resolved: String,
        #[help]
        help: Option<String>,
    },

    #[error("cannot read module `{path}`: {reason}")]
    #[diagnostic(
        code(pex::import::unreadable),
        help("an import names a readable .pex file, relative to the importing file")
    )]
    ImportUnreadable {
        path: String,
        reason: String,
        #[label("cannot read this")]
        span: SourceSpan,
    },

    #[error("there is no standard module `{path}`")]
    #[diagnostic(code(pex::import::unknown_std))]
    UnknownStdModule {
        path: String,
        #[label("not a standard module")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("import cycle: {cycle}")]
    #[diagnostic(
        code(pex::import::cycle),
        help("move the shared definitions into a module that both files import")
    )]
    ImportCycle {
        cycle: String,
        #[label("this import closes the cycle")]
        span: SourceSpan,
    },

    #[error("`{name}` is not defined in module `{module}`")]
    #[diagnostic(code(pex::import::not_exported))]
    NotExported {
        name: String,
        module: String,
        #[label("not in `{module}`")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("stage `{name}` cannot be imported")]
    #[diagnostic(code(pex::import::stage), help("stages belong to the experiment file that declares them; import its models and data instead, or declare the stage here"))]
    StageImport {
        name: String,
        #[label("a stage of `{module}`")]
        span: SourceSpan,
        module: String,
    },

    // ------------------------------------------------------------------ names
    #[error("`--set {path}`: {what}")]
    #[diagnostic(code(pex::set::unknown_path))]
    SetUnknownPath {
        path: String,
        what: String,
        #[label("{label}")]
        span: SourceSpan,
        label: String,
        #[help]
        help: Option<String>,
    },

    #[error("`--set` takes `path=value`, found `{text}`")]
    #[diagnostic(
        code(pex::set::malformed),
        help("a path of names joined by dots, `=`, and a value in pex syntax: `--set core.batch=32K`, `--set core.r98.samples=1M`, `--set vision.depth=12`")
    )]
    SetMalformed {
        text: String,
        #[label("{why}")]
        span: SourceSpan,
        why: String,
    },

    #[error("unknown name `{name}`")]
    #[diagnostic(code(pex::name::unknown))]
    UnknownName {
        name: String,
        #[label("not defined")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("`{name}` is defined twice")]
    #[diagnostic(code(pex::name::duplicate), help("rename one of them; names are unique within a file (and within a stage for phases and teachers)"))]
    Duplicate {
        name: String,
        #[label("second definition")]
        span: SourceSpan,
        #[label("first defined here")]
        first: SourceSpan,
    },

    #[error("`{name}` is defined in terms of itself: {cycle}")]
    #[diagnostic(
        code(pex::name::cycle),
        help("a definition cannot depend on its own value")
    )]
    DefinitionCycle {
        name: String,
        cycle: String,
        #[label("refers back to `{name}`")]
        span: SourceSpan,
    },

    #[error("`{name}` is {what}, not a constructor")]
    #[diagnostic(code(pex::call::not_constructor))]
    NotConstructor {
        name: String,
        what: String,
        #[label("cannot be called")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("`{name}` has no member `{member}`")]
    #[diagnostic(code(pex::member::unknown))]
    UnknownMember {
        name: String,
        member: String,
        #[label("unknown member")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    // ------------------------------------------------------------------ arguments and types
    #[error("`{ctor}` has no argument `{name}`")]
    #[diagnostic(code(pex::arg::unknown))]
    UnknownArg {
        ctor: String,
        name: String,
        #[label("unknown argument")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("`{ctor}` is missing {names}")]
    #[diagnostic(code(pex::arg::missing))]
    MissingArg {
        ctor: String,
        names: String,
        #[label("missing {names}")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("argument `{name}` is given twice")]
    #[diagnostic(code(pex::arg::duplicate), help("remove one of them"))]
    DuplicateArg {
        name: String,
        #[label("again here")]
        span: SourceSpan,
        #[label("first here")]
        first: SourceSpan,
    },

    #[error("`{ctor}` takes named arguments only")]
    #[diagnostic(code(pex::arg::positional))]
    Positional {
        ctor: String,
        #[label("name this argument")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("expected {expected}, found {found}")]
    #[diagnostic(code("pex::type::mismatch"))]
    TypeMismatch {
        expected: String,
        found: String,
        #[label("{found}")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("{what} must be {constraint}, but it is {value}")]
    #[diagnostic(code(pex::value::out_of_range))]
    OutOfRange {
        what: String,
        constraint: String,
        value: String,
        #[label("out of range")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    // ------------------------------------------------------------------ stages and phases
    #[error("a stage has no field `{name}`")]
    #[diagnostic(code(pex::stage::unknown_field))]
    UnknownField {
        name: String,
        #[label("unknown field")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("field `{name}` is set twice")]
    #[diagnostic(
        code(pex::stage::duplicate_field),
        help(
            "remove one of them; a phase overrides a stage field by setting it in the phase block"
        )
    )]
    DuplicateField {
        name: String,
        #[label("again here")]
        span: SourceSpan,
        #[label("first here")]
        first: SourceSpan,
    },

    #[error("`{name}` cannot be set in a phase")]
    #[diagnostic(
        code(pex::phase::stage_only_field),
        help("set `{name}` on the stage; it holds for all its phases")
    )]
    StageOnlyField {
        name: String,
        #[label("stage-level field")]
        span: SourceSpan,
    },

    #[error("stage `{stage}` has no `{field}`")]
    #[diagnostic(code(pex::stage::missing_field))]
    MissingField {
        stage: String,
        field: String,
        #[label("needs `{field}`")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("{block} sets both `{first_unit}` and `{second_unit}`")]
    #[diagnostic(
        code(pex::units::conflict),
        help("give one unit of work per phase: `steps`, `samples` or `epochs`")
    )]
    UnitsConflict {
        block: String,
        first_unit: String,
        second_unit: String,
        #[label("second unit")]
        span: SourceSpan,
        #[label("first unit")]
        first: SourceSpan,
    },

    #[error("{unit} of `{data}` cannot be planned: its size is known only when it is read")]
    #[diagnostic(
        code(pex::plan::epochs_unknown_size),
        help("write `steps: N` or `samples: N` for data read from files; epochs work on generated data, whose size the plan knows")
    )]
    EpochsUnknownSize {
        unit: String,
        data: String,
        #[label("epochs of a dataset of unknown size")]
        span: SourceSpan,
    },

    #[error("{block} has no unit of work")]
    #[diagnostic(
        code(pex::units::missing),
        help("add `steps: N`, `samples: N` or `epochs: N`, to the phase or to its stage")
    )]
    UnitsMissing {
        block: String,
        #[label("how long does this train?")]
        span: SourceSpan,
    },

    #[error("resolution {resolution} is not divisible by the patch size {patch} of `{model}`")]
    #[diagnostic(code(pex::resolution::not_divisible))]
    NotDivisible {
        resolution: i64,
        patch: i64,
        model: String,
        #[label("{resolution} / {patch} is not a whole number of patches")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("`{tap}` is outside `{model}`, which has {depth} blocks")]
    #[diagnostic(code(pex::tap::out_of_range))]
    TapOutOfRange {
        tap: String,
        model: String,
        depth: i64,
        #[label("no such block")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("stage cycle: {cycle}")]
    #[diagnostic(
        code(pex::stage::cycle),
        help(
            "a stage can only depend on stages that run before it; remove one of these references"
        )
    )]
    StageCycle {
        cycle: String,
        #[label("this reference closes the cycle")]
        span: SourceSpan,
        #[label(collection)]
        others: Vec<LabeledSpan>,
    },

    #[error("stage `{stage}` does not produce `{name}`")]
    #[diagnostic(code(pex::stage::not_produced))]
    NotProduced {
        stage: String,
        name: String,
        #[label("not trained or exported by `{stage}`")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("mask regularization duplicates {fraction} of a batch of {batch}: {product} samples is not a whole number")]
    #[diagnostic(code(pex::batch::mask_fraction))]
    MaskFraction {
        fraction: String,
        batch: i64,
        product: String,
        #[label("fraction of the batch")]
        span: SourceSpan,
        #[label("batch set here")]
        batch_span: Option<SourceSpan>,
        #[help]
        help: Option<String>,
    },

    #[error("batch {batch} is not divisible by {by} ({why})")]
    #[diagnostic(code(pex::batch::indivisible))]
    BatchIndivisible {
        batch: i64,
        by: i64,
        why: String,
        #[label("batch")]
        span: SourceSpan,
        #[label("set here")]
        other: Option<SourceSpan>,
        #[help]
        help: Option<String>,
    },

    #[error("frame pooling on image data")]
    #[diagnostic(code(pex::video::image_data), help("`video: frame_pool(..)` needs video data such as `synthetic_video(..)`; remove it for images"))]
    FramePoolOnImages {
        #[label("frame pooling")]
        span: SourceSpan,
        #[label("this data holds images")]
        data: Option<SourceSpan>,
    },

    #[error("{loss} needs {needed} among the stage's models")]
    #[diagnostic(code(pex::loss::missing_model))]
    MissingModel {
        loss: String,
        needed: String,
        #[label("needs {needed}")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("teacher `{name}` is listed in `train`")]
    #[diagnostic(code(pex::teacher::trained), help("teachers are frozen; train the student model instead (training the model a teacher was frozen from is fine)"))]
    TeacherTrained {
        name: String,
        #[label("a teacher")]
        span: SourceSpan,
        #[label("declared here")]
        teacher: SourceSpan,
    },

    #[error("{loss} compares width {student} with width {teacher}")]
    #[diagnostic(code(pex::loss::dim_mismatch))]
    DimMismatch {
        loss: String,
        student: i64,
        teacher: i64,
        #[label("student width {student}, teacher width {teacher}")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("{loss} needs {needed} as its teacher, but `{teacher}` is {found}")]
    #[diagnostic(code(pex::teacher::kind))]
    TeacherKind {
        loss: String,
        needed: String,
        teacher: String,
        found: String,
        #[label("{found}")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("`{arg}` of `{ctor}` must be {needed}, but `{model}` is {found}")]
    #[diagnostic(code(pex::model::kind))]
    ModelKind {
        ctor: String,
        arg: String,
        needed: String,
        model: String,
        found: String,
        #[label("{found}")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("{what}")]
    #[diagnostic(code(pex::model::width_mismatch))]
    WidthMismatch {
        what: String,
        #[label("{label}")]
        span: SourceSpan,
        label: String,
        #[help]
        help: Option<String>,
    },

    #[error("`{path}` does not exist")]
    #[diagnostic(code(pex::path::missing), help("paths are relative to the directory of the file that names them; `pexc check` without `--check-paths` skips this check"))]
    PathMissing {
        path: String,
        resolved: String,
        #[label("no file or directory at {resolved}")]
        span: SourceSpan,
    },

    #[error("`{path}` is {found}, not {expected}")]
    #[diagnostic(code(pex::path::wrong_kind), help("{help}"))]
    PathWrongKind {
        path: String,
        resolved: String,
        expected: String,
        found: String,
        help: String,
        #[label("{found} at {resolved}")]
        span: SourceSpan,
    },

    #[error("the weights in `{path}` do not fit model `{model}`")]
    #[diagnostic(code(pex::weights::mismatch), help("{help}"))]
    WeightsMismatch {
        path: String,
        model: String,
        /// The first mismatching keys, one per line: expected and found shapes.
        detail: String,
        help: String,
        #[label("{detail}")]
        span: SourceSpan,
    },

    #[error("cannot read the weights in `{path}`: {reason}")]
    #[diagnostic(
        code(pex::weights::unreadable),
        help("`weights` takes a `.pt` or `.safetensors` file in the official PE layout")
    )]
    WeightsUnreadable {
        path: String,
        reason: String,
        #[label("this checkpoint")]
        span: SourceSpan,
    },

    // ------------------------------------------------------------------ warnings
    #[error("resolution decreases from {from} to {to}")]
    #[diagnostic(
        code(pex::warn::resolution_decreases),
        severity(Warning),
        help("progressive resolution goes up; check the phase order")
    )]
    ResolutionDecreases {
        from: i64,
        to: i64,
        #[label("{to}")]
        span: SourceSpan,
        #[label("previous phase: {from}")]
        previous: Option<SourceSpan>,
    },

    #[error("`{name}` is never used")]
    #[diagnostic(
        code(pex::warn::unused),
        severity(Warning),
        help("remove it, or use it in a stage")
    )]
    Unused {
        name: String,
        #[label("unused {what}")]
        span: SourceSpan,
        what: String,
    },

    #[error("learning rate {lr} is greater than 1")]
    #[diagnostic(
        code(pex::warn::lr_high),
        severity(Warning),
        help("peak learning rates are usually between 1e-6 and 1e-2; check the exponent")
    )]
    LrHigh {
        lr: String,
        #[label("unusually large")]
        span: SourceSpan,
    },

    #[error("stage `{stage}` trains nothing")]
    #[diagnostic(
        code(pex::warn::trains_nothing),
        severity(Warning),
        help("list the models it trains: `train: [vision, text]`")
    )]
    TrainsNothing {
        stage: String,
        #[label("no `train` models")]
        span: SourceSpan,
    },

    #[error("the file is empty")]
    #[diagnostic(
        code(pex::warn::empty_file),
        severity(Warning),
        help("an experiment declares at least one `stage`; see experiments/tiny/core.pex")
    )]
    EmptyFile {
        #[label("nothing here")]
        span: SourceSpan,
    },
}

/// A diagnostic and the file it belongs to.
#[derive(Debug, Clone)]
pub struct Problem {
    pub file: FileId,
    pub error: Error,
}

impl Problem {
    pub fn is_error(&self) -> bool {
        !matches!(self.error.severity(), Some(miette::Severity::Warning))
    }

    pub fn code(&self) -> String {
        self.error.code().map(|c| c.to_string()).unwrap_or_default()
    }

    /// The primary span: the first label.
    pub fn primary(&self) -> Option<SourceSpan> {
        self.error
            .labels()
            .and_then(|mut l| l.next())
            .map(|l| *l.inner())
    }
}

/// The diagnostics of a compilation, accumulated.
#[derive(Debug, Default, Clone)]
pub struct Problems {
    pub list: Vec<Problem>,
}

impl Problems {
    pub fn push(&mut self, file: FileId, error: Error) {
        self.list.push(Problem { file, error });
    }

    pub fn has_errors(&self) -> bool {
        self.list.iter().any(Problem::is_error)
    }
}
