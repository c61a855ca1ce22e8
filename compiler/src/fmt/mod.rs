//! `pexc fmt`: the one canonical layout of a `.pex` file, comments kept.
//!
//! The layout:
//! - 4 spaces of indentation per block (`stage`, multi-line `phase`, broken brackets);
//! - one item or stage statement per line; blank lines between them kept, at most one;
//! - `key: value`, `name = value`, one space around binary operators (`a + 0.5 * b`), except
//!   a fraction of two integers, written tight (`1/16`); no column alignment;
//! - a bracketed list (call arguments, `[..]`, `(..)`, `{..}`, imports) on one line when it
//!   fits in 100 columns, otherwise one element per line with a trailing comma; outer
//!   brackets break before inner ones; a `+`/`-` chain that does not fit puts each further
//!   operand on a line of its own, operator first, one level deeper;
//! - a `phase` written on one line stays on one line when it fits
//!   (`phase r98 { resolution: 98, samples: 10B }`); any other is one field per line;
//! - literals exactly as written (`2K`, `32Ki`, `1_000`, `2e-3`, string escapes);
//! - `//` and `///` comments kept, on their own lines or at the end of a line (see `layout`).
//!
//! The result is checked before it is returned: it must parse to the same AST (spans
//! aside) and hold the same comments, so a formatter bug can never change a program.

mod doc;
mod layout;

use std::path::PathBuf;

use crate::diagnostic::{Error, Problems};
use crate::source::{FileId, Origin, SourceFile, SourceMap, Span};
use crate::syntax::ast::*;
use crate::syntax::parse_module;

/// Why a file was not formatted.
#[derive(Debug)]
pub enum FmtError {
    /// It is not valid `.pex` syntax, or not UTF-8: its diagnostic, with the file (id 0 of
    /// `sources`) to render it against, as `pexc check` would report it.
    Invalid {
        sources: SourceMap,
        problems: Problems,
    },
    /// The formatter's own check failed (a bug): the output would not have been the same
    /// program or would have lost a comment. Nothing should be written.
    Internal(String),
}

impl std::fmt::Display for FmtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FmtError::Invalid { problems, .. } => match problems.list.first() {
                Some(p) => write!(f, "{}: {}", p.code(), p.error),
                None => write!(f, "invalid file"),
            },
            FmtError::Internal(why) => write!(f, "internal formatter error: {why}"),
        }
    }
}

impl std::error::Error for FmtError {}

/// Formats the file `name` (the name is only for diagnostics) from its bytes.
pub fn format_bytes(name: &str, bytes: &[u8]) -> Result<String, FmtError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => format_source(name, text),
        Err(e) => {
            let offset = e.valid_up_to();
            let text = String::from_utf8_lossy(bytes).into_owned();
            let error = Error::NotUtf8 {
                byte: bytes[offset],
                offset,
                span: Span::new(offset, offset + 1).into(),
            };
            Err(invalid(name, text, error))
        }
    }
}

/// Formats the text of the file `name` (the name is only for diagnostics).
pub fn format_source(name: &str, text: &str) -> Result<String, FmtError> {
    let module = parse_module(text).map_err(|e| invalid(name, text.to_string(), *e))?;
    let formatted = format_module(text, &module);
    verify(text, module, &formatted)?;
    Ok(formatted)
}

/// Lays out a parsed module; `text` is the source it was parsed from (for comments, blank
/// lines and literals as written). Unchecked: `format_source` checks the result.
pub fn format_module(text: &str, module: &Module) -> String {
    let doc = layout::Layout::new(text).module(module);
    doc::render(&doc)
}

/// The comments of a file that parses, in order, `//` included, trailing spaces dropped.
pub fn comments(text: &str) -> Vec<&str> {
    layout::scan_comments(text)
        .into_iter()
        .map(|c| c.text)
        .collect()
}

fn invalid(name: &str, text: String, error: Error) -> FmtError {
    let mut sources = SourceMap::default();
    let file = sources.add(SourceFile::new(
        name.to_string(),
        Origin::Path(PathBuf::from(name)),
        text,
    ));
    debug_assert_eq!(file, FileId(0));
    let mut problems = Problems::default();
    problems.push(file, error);
    FmtError::Invalid { sources, problems }
}

/// The formatted text must be the same program with the same comments.
fn verify(text: &str, mut module: Module, formatted: &str) -> Result<(), FmtError> {
    let mut again = parse_module(formatted)
        .map_err(|e| FmtError::Internal(format!("the formatted text does not parse: {e}")))?;
    erase_spans(&mut module);
    erase_spans(&mut again);
    if module != again {
        return Err(FmtError::Internal(
            "the formatted text is not the same program".into(),
        ));
    }
    // As multisets: a comment moved out of an expression may change places with another.
    let mut before = comments(text);
    let mut after = comments(formatted);
    before.sort_unstable();
    after.sort_unstable();
    if before != after {
        return Err(FmtError::Internal(
            "the formatted text lost or changed a comment".into(),
        ));
    }
    Ok(())
}

/// Sets every span of the module to `0..0`, so that two parses of differently laid out
/// text compare equal when they are the same program.
pub fn erase_spans(module: &mut Module) {
    for item in &mut module.items {
        match item {
            Item::Use(u) => {
                u.source_span = Span::default();
                u.span = Span::default();
                for import in &mut u.imports {
                    erase_ident(&mut import.name);
                    if let Some(alias) = &mut import.alias {
                        erase_ident(alias);
                    }
                }
            }
            Item::Def(d) => {
                erase_ident(&mut d.name);
                erase_expr(&mut d.value);
                d.span = Span::default();
            }
            Item::Stage(s) => {
                erase_ident(&mut s.name);
                s.span = Span::default();
                for item in &mut s.items {
                    match item {
                        StageItem::Field(f) => erase_field(f),
                        StageItem::Phase(p) => {
                            erase_ident(&mut p.name);
                            p.span = Span::default();
                            p.fields.iter_mut().for_each(erase_field);
                        }
                        StageItem::Teacher(b) | StageItem::Export(b) => {
                            erase_ident(&mut b.name);
                            erase_expr(&mut b.value);
                            b.span = Span::default();
                        }
                    }
                }
            }
        }
    }
}

fn erase_ident(ident: &mut Ident) {
    ident.span = Span::default();
}

fn erase_field(f: &mut Field) {
    erase_ident(&mut f.name);
    erase_expr(&mut f.value);
    f.span = Span::default();
}

fn erase_args(args: &mut [Arg]) {
    for a in args {
        if let Some(name) = &mut a.name {
            erase_ident(name);
        }
        erase_expr(&mut a.value);
        a.span = Span::default();
    }
}

fn erase_record(fields: &mut [RecordField]) {
    for f in fields {
        erase_ident(&mut f.name);
        erase_expr(&mut f.value);
        f.span = Span::default();
    }
}

fn erase_expr(e: &mut Expr) {
    e.span = Span::default();
    match &mut e.kind {
        ExprKind::Call { callee, args } => {
            erase_ident(callee);
            erase_args(args);
        }
        ExprKind::List(items) | ExprKind::Tuple(items) => items.iter_mut().for_each(erase_expr),
        ExprKind::Paren(inner) | ExprKind::Neg(inner) => erase_expr(inner),
        ExprKind::Record(fields) => erase_record(fields),
        ExprKind::Member { base, name, args } => {
            erase_expr(base);
            erase_ident(name);
            if let Some(args) = args {
                erase_args(args);
            }
        }
        ExprKind::With { base, fields } => {
            erase_expr(base);
            erase_record(fields);
        }
        ExprKind::Binary { lhs, rhs, .. } => {
            erase_expr(lhs);
            erase_expr(rhs);
        }
        ExprKind::Int(_)
        | ExprKind::Float(_)
        | ExprKind::Overflow
        | ExprKind::Str(_)
        | ExprKind::Bool(_)
        | ExprKind::Name(_) => {}
    }
}
