//! The untyped AST: what the parser produces. Every node carries its byte span.

use crate::source::Span;

/// A name with its span.
#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A parsed file.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Module {
    pub items: Vec<Item>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Use(Use),
    Def(Def),
    Stage(Stage),
}

/// `use std::pe::{a, b as c}` or `use "file.pex"::{a}`.
#[derive(Clone, Debug, PartialEq)]
pub struct Use {
    pub source: ModuleSource,
    pub source_span: Span,
    pub imports: Vec<Import>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ModuleSource {
    /// `std::pe`
    Std(String),
    /// `"common.pex"`, relative to the importing file.
    File(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Import {
    pub name: Ident,
    pub alias: Option<Ident>,
}

impl Import {
    /// The name the import binds in the importing file.
    pub fn local(&self) -> &Ident {
        self.alias.as_ref().unwrap_or(&self.name)
    }
}

/// Which keyword introduced a definition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefKind {
    Let,
    Model,
    Data,
}

impl DefKind {
    pub fn keyword(self) -> &'static str {
        match self {
            DefKind::Let => "let",
            DefKind::Model => "model",
            DefKind::Data => "data",
        }
    }
}

/// `let|model|data name = expr`
#[derive(Clone, Debug, PartialEq)]
pub struct Def {
    pub kind: DefKind,
    pub name: Ident,
    pub value: Expr,
    /// The `///` lines right above it, without the slashes.
    pub doc: Option<String>,
    pub span: Span,
}

/// `stage name { ... }`
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    pub name: Ident,
    pub items: Vec<StageItem>,
    pub doc: Option<String>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum StageItem {
    Field(Field),
    Phase(Phase),
    Teacher(Binding),
    Export(Binding),
}

/// `name: expr`
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    pub name: Ident,
    pub value: Expr,
    pub span: Span,
}

/// `phase name { fields }`
#[derive(Clone, Debug, PartialEq)]
pub struct Phase {
    pub name: Ident,
    pub fields: Vec<Field>,
    pub span: Span,
}

/// `teacher name = expr` or `export name = expr`
#[derive(Clone, Debug, PartialEq)]
pub struct Binding {
    pub name: Ident,
    pub value: Expr,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    /// An integer literal, suffixes applied (`2K` = 2000).
    Int(i64),
    Float(f64),
    /// An integer literal beyond 64 bits; diagnosed by the checker.
    Overflow,
    Str(String),
    Bool(bool),
    Name(String),
    Call {
        callee: Ident,
        args: Vec<Arg>,
    },
    List(Vec<Expr>),
    Tuple(Vec<Expr>),
    Paren(Box<Expr>),
    Record(Vec<RecordField>),
    /// `base.name` or `base.name(args)`
    Member {
        base: Box<Expr>,
        name: Ident,
        args: Option<Vec<Arg>>,
    },
    /// `base with { fields }`
    With {
        base: Box<Expr>,
        fields: Vec<RecordField>,
    },
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    Neg(Box<Expr>),
}

/// A call argument: named (`lr: 2e-3`) or positional.
#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
    pub span: Span,
}

/// `name: expr` inside `{ }`.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordField {
    pub name: Ident,
    pub value: Expr,
    pub span: Span,
}
