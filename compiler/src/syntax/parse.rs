//! pest pairs -> AST. One function per node kind; punctuation pairs are skipped.
//! Naming: `parse_x` turns a pair of rule `x` into its node.

use std::sync::OnceLock;

use pest::iterators::{Pair, Pairs};
use pest::pratt_parser::{Assoc, Op, PrattParser};
use pest::Parser;

use super::ast::*;
use super::words;
use crate::diagnostic::Error;
use crate::source::Span;

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/pex.pest"]
pub struct PexParser;

/// Brackets nested deeper than this are refused before parsing (the parser and the checker
/// recurse on nesting; no experiment nests more than a handful).
pub const MAX_NESTING: usize = 64;

/// Files larger than this are refused before parsing.
pub const MAX_FILE_BYTES: usize = 64 << 20;

/// Parses a whole file. A syntax error is the file's only diagnostic (pest does not recover);
/// literal problems found while building the AST (a number beyond 64 bits) come back in
/// `Module` as `ExprKind::Overflow` for the checker.
pub fn parse_module(text: &str) -> Result<Module, Box<Error>> {
    if text.len() > MAX_FILE_BYTES {
        return Err(Box::new(Error::FileTooLarge {
            span: Span::new(0, 0).into(),
            bytes: text.len(),
            limit: MAX_FILE_BYTES,
        }));
    }
    check_nesting(text)?;
    let mut pairs =
        PexParser::parse(Rule::file, text).map_err(|e| Box::new(words::syntax_error(text, e)))?;
    let file = pairs
        .next()
        .expect("the file rule always produces one pair");
    check_pairs(&file, text)?;
    let mut items = Vec::new();
    for pair in file.into_inner() {
        match pair.as_rule() {
            Rule::use_decl => items.push(Item::Use(parse_use(pair))),
            Rule::let_decl => items.push(Item::Def(parse_def(pair, DefKind::Let, text))),
            Rule::model_decl => items.push(Item::Def(parse_def(pair, DefKind::Model, text))),
            Rule::data_decl => items.push(Item::Def(parse_def(pair, DefKind::Data, text))),
            Rule::stage_decl => items.push(Item::Stage(parse_stage(pair, text))),
            _ => {} // EOI
        }
    }
    Ok(Module { items })
}

/// Parses a lone expression (the value of a `--set` override), with the same checks as a
/// file.
pub fn parse_expression(text: &str) -> Result<Expr, Box<Error>> {
    check_nesting(text)?;
    let mut pairs = PexParser::parse(Rule::expr_only, text)
        .map_err(|e| Box::new(words::syntax_error(text, e)))?;
    let whole = pairs
        .next()
        .expect("the expr_only rule always produces one pair");
    check_pairs(&whole, text)?;
    let expr = whole
        .into_inner()
        .find(|p| p.as_rule() == Rule::expr)
        .expect("expr_only holds an expression");
    Ok(parse_expr(expr))
}

/// Operators in one expression beyond this are refused: a chain of operators nests as deep
/// as it is long in the AST, and the checker recurses on it.
pub const MAX_OPERATORS: usize = 256;

/// Words that cannot name anything.
pub fn is_keyword(word: &str) -> bool {
    matches!(
        word,
        "use"
            | "let"
            | "model"
            | "data"
            | "stage"
            | "phase"
            | "teacher"
            | "export"
            | "with"
            | "as"
            | "true"
            | "false"
    )
}

/// What the grammar leaves to a pass over the parsed tokens: keywords used as names, and
/// expressions with more than `MAX_OPERATORS` infix, prefix or postfix operators. One pass
/// over pest's token queue, iterative, allocating only a stack of open rules.
fn check_pairs(file: &Pair<Rule>, text: &str) -> Result<(), Box<Error>> {
    use pest::Token;
    // Open rules: (rule, start, operators seen directly inside it).
    let mut open: Vec<(Rule, usize, usize)> = Vec::new();
    for token in file.clone().tokens() {
        match token {
            Token::Start { rule, pos } => {
                let start = pos.pos();
                if let Some(parent) = open.last_mut() {
                    let is_op = matches!(
                        rule,
                        Rule::add
                            | Rule::sub
                            | Rule::mul
                            | Rule::div
                            | Rule::neg
                            | Rule::member
                            | Rule::with_update
                    );
                    if parent.0 == Rule::expr && is_op {
                        parent.2 += 1;
                        if parent.2 > MAX_OPERATORS {
                            return Err(Box::new(Error::TooManyOperators {
                                limit: MAX_OPERATORS,
                                span: Span::new(start, start + 1).into(),
                            }));
                        }
                    }
                }
                open.push((rule, start, 0));
            }
            Token::End { rule, pos } => {
                let Some((_, start, _)) = open.pop() else {
                    continue;
                };
                if rule == Rule::ident {
                    let word = &text[start..pos.pos()];
                    if is_keyword(word) {
                        return Err(Box::new(Error::Syntax {
                            message: format!("expected a name, found `{word}`"),
                            label: "expected a name".into(),
                            span: Span::new(start, pos.pos()).into(),
                            help: Some(format!("`{word}` is a keyword; choose another name")),
                        }));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Refuses bracket nesting deeper than `MAX_NESTING`, skipping strings and comments.
fn check_nesting(text: &str) -> Result<(), Box<Error>> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(Box::new(Error::TooDeep {
                        span: Span::new(i, i + 1).into(),
                        limit: MAX_NESTING,
                    }));
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

fn span(pair: &Pair<Rule>) -> Span {
    pair.as_span().into()
}

fn ident(pair: Pair<Rule>) -> Ident {
    Ident {
        name: pair.as_str().to_string(),
        span: span(&pair),
    }
}

/// The meaningful children of a pair: punctuation and keywords dropped.
fn inner(pair: Pair<Rule>) -> impl Iterator<Item = Pair<Rule>> {
    pair.into_inner().filter(|p| !is_token(p.as_rule()))
}

fn is_token(rule: Rule) -> bool {
    matches!(
        rule,
        Rule::colon
            | Rule::path_sep
            | Rule::comma
            | Rule::equals
            | Rule::dot
            | Rule::lbrace
            | Rule::rbrace
            | Rule::lparen
            | Rule::rparen
            | Rule::lbracket
            | Rule::rbracket
            | Rule::kw_use
            | Rule::kw_let
            | Rule::kw_model
            | Rule::kw_data
            | Rule::kw_stage
            | Rule::kw_phase
            | Rule::kw_teacher
            | Rule::kw_export
            | Rule::kw_with
            | Rule::kw_as
    )
}

/// The `///` lines directly above `start`, joined; `None` when there are none.
fn doc_above(text: &str, start: usize) -> Option<String> {
    let mut lines = Vec::new();
    let before = &text[..start];
    let mut rest = before.trim_end_matches([' ', '\t']);
    // The item starts a line; walk back over the lines above it.
    while let Some(stripped) = rest.strip_suffix('\n') {
        let stripped = stripped.strip_suffix('\r').unwrap_or(stripped);
        let line_start = stripped.rfind('\n').map_or(0, |i| i + 1);
        let line = stripped[line_start..].trim();
        match line.strip_prefix("///") {
            Some(doc) => lines.push(doc.strip_prefix(' ').unwrap_or(doc).to_string()),
            None => break,
        }
        rest = &stripped[..line_start];
    }
    if lines.is_empty() {
        return None;
    }
    lines.reverse();
    Some(lines.join("\n"))
}

fn parse_use(pair: Pair<Rule>) -> Use {
    let whole = span(&pair);
    let mut children = inner(pair);
    let path = children.next().expect("use has a module path");
    let source_span = span(&path);
    let source_pair = path.into_inner().next().expect("module path has one child");
    let source = match source_pair.as_rule() {
        Rule::string => ModuleSource::File(unescape(source_pair.as_str())),
        _ => ModuleSource::Std(
            inner(source_pair)
                .map(|p| p.as_str().to_string())
                .collect::<Vec<_>>()
                .join("::"),
        ),
    };
    let imports = children
        .map(|imp| {
            let mut names = inner(imp).map(ident);
            let name = names.next().expect("import has a name");
            Import {
                name,
                alias: names.next(),
            }
        })
        .collect();
    Use {
        source,
        source_span,
        imports,
        span: whole,
    }
}

fn parse_def(pair: Pair<Rule>, kind: DefKind, text: &str) -> Def {
    let whole = span(&pair);
    let mut children = inner(pair);
    let name = ident(children.next().expect("definition has a name"));
    let value = parse_expr(children.next().expect("definition has a value"));
    Def {
        kind,
        name,
        value,
        doc: doc_above(text, whole.start),
        span: whole,
    }
}

fn parse_stage(pair: Pair<Rule>, text: &str) -> Stage {
    let whole = span(&pair);
    let mut children = inner(pair);
    let name = ident(children.next().expect("stage has a name"));
    let items = children
        .map(|item| match item.as_rule() {
            Rule::phase_decl => {
                let s = span(&item);
                let mut parts = inner(item);
                let name = ident(parts.next().expect("phase has a name"));
                StageItem::Phase(Phase {
                    name,
                    fields: parts.map(parse_field).collect(),
                    span: s,
                })
            }
            Rule::teacher_decl => StageItem::Teacher(parse_binding(item)),
            Rule::export_decl => StageItem::Export(parse_binding(item)),
            _ => StageItem::Field(parse_field(item)),
        })
        .collect();
    Stage {
        name,
        items,
        doc: doc_above(text, whole.start),
        span: whole,
    }
}

fn parse_binding(pair: Pair<Rule>) -> Binding {
    let s = span(&pair);
    let mut parts = inner(pair);
    let name = ident(parts.next().expect("binding has a name"));
    let value = parse_expr(parts.next().expect("binding has a value"));
    Binding {
        name,
        value,
        span: s,
    }
}

fn parse_field(pair: Pair<Rule>) -> Field {
    let mut parts = inner(pair);
    let name = ident(parts.next().expect("field has a name"));
    let value = parse_expr(parts.next().expect("field has a value"));
    Field {
        span: name.span.to(value.span),
        name,
        value,
    }
}

fn pratt() -> &'static PrattParser<Rule> {
    static PRATT: OnceLock<PrattParser<Rule>> = OnceLock::new();
    PRATT.get_or_init(|| {
        PrattParser::new()
            .op(Op::infix(Rule::add, Assoc::Left) | Op::infix(Rule::sub, Assoc::Left))
            .op(Op::infix(Rule::mul, Assoc::Left) | Op::infix(Rule::div, Assoc::Left))
            .op(Op::prefix(Rule::neg))
            .op(Op::postfix(Rule::member) | Op::postfix(Rule::with_update))
    })
}

fn parse_expr(pair: Pair<Rule>) -> Expr {
    parse_expr_pairs(pair.into_inner())
}

fn parse_expr_pairs(pairs: Pairs<Rule>) -> Expr {
    pratt()
        .map_primary(parse_primary)
        .map_prefix(|op, rhs| Expr {
            span: span(&op).to(rhs.span),
            kind: ExprKind::Neg(Box::new(rhs)),
        })
        .map_postfix(parse_postfix)
        .map_infix(|lhs, op, rhs| {
            let op = match op.as_rule() {
                Rule::add => BinOp::Add,
                Rule::sub => BinOp::Sub,
                Rule::mul => BinOp::Mul,
                _ => BinOp::Div,
            };
            Expr {
                span: lhs.span.to(rhs.span),
                kind: ExprKind::Binary {
                    op,
                    lhs: Box::new(lhs),
                    rhs: Box::new(rhs),
                },
            }
        })
        .parse(pairs)
}

/// `.name`, `.name(args)` or `with { .. }` applied to `base`.
fn parse_postfix(base: Expr, op: Pair<Rule>) -> Expr {
    let whole = base.span.to(span(&op));
    let kind = match op.as_rule() {
        Rule::member => {
            let mut m = inner(op);
            let name = ident(m.next().expect("member has a name"));
            let args = m.next().map(parse_args);
            ExprKind::Member {
                base: Box::new(base),
                name,
                args,
            }
        }
        _ => {
            let record = inner(op).next().expect("with has a record");
            ExprKind::With {
                base: Box::new(base),
                fields: parse_record_fields(record),
            }
        }
    };
    Expr { span: whole, kind }
}

fn parse_primary(pair: Pair<Rule>) -> Expr {
    let mut s = span(&pair);
    let kind = match pair.as_rule() {
        Rule::number => parse_number(pair.as_str()),
        Rule::string => ExprKind::Str(unescape(pair.as_str())),
        Rule::boolean => ExprKind::Bool(pair.as_str() == "true"),
        Rule::name_or_call => {
            let mut parts = inner(pair);
            let callee = ident(parts.next().expect("a name"));
            match parts.next() {
                Some(args) => ExprKind::Call {
                    callee,
                    args: parse_args(args),
                },
                None => {
                    // The pair also holds the whitespace skipped while looking for `(`.
                    s = callee.span;
                    ExprKind::Name(callee.name)
                }
            }
        }
        Rule::list => ExprKind::List(inner(pair).map(parse_expr).collect()),
        Rule::tuple_or_paren => {
            let has_comma = pair
                .clone()
                .into_inner()
                .any(|p| p.as_rule() == Rule::comma);
            let mut items: Vec<Expr> = inner(pair).map(parse_expr).collect();
            if items.len() == 1 && !has_comma {
                ExprKind::Paren(Box::new(items.remove(0)))
            } else {
                ExprKind::Tuple(items)
            }
        }
        _ => ExprKind::Record(parse_record_fields(pair)),
    };
    Expr { kind, span: s }
}

fn parse_args(pair: Pair<Rule>) -> Vec<Arg> {
    inner(pair)
        .map(|a| {
            let s = span(&a);
            match a.as_rule() {
                Rule::named_arg => {
                    let mut parts = inner(a);
                    let name = ident(parts.next().expect("named argument has a name"));
                    let value = parse_expr(parts.next().expect("named argument has a value"));
                    Arg {
                        name: Some(name),
                        value,
                        span: s,
                    }
                }
                _ => Arg {
                    name: None,
                    value: parse_expr(a),
                    span: s,
                },
            }
        })
        .collect()
}

fn parse_record_fields(pair: Pair<Rule>) -> Vec<RecordField> {
    inner(pair)
        .map(|f| {
            let s = span(&f);
            let mut parts = inner(f);
            let name = ident(parts.next().expect("record field has a name"));
            let value = parse_expr(parts.next().expect("record field has a value"));
            RecordField {
                name,
                value,
                span: s,
            }
        })
        .collect()
}

/// `"a\"b"` -> `a"b`
fn unescape(quoted: &str) -> String {
    let body = &quoted[1..quoted.len() - 1];
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('0') => out.push('\0'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// A number token to its value, exactly: `5.4B` is the integer 5_400_000_000.
pub fn parse_number(token: &str) -> ExprKind {
    let clean: String = token.chars().filter(|&c| c != '_').collect();
    let (body, multiplier): (&str, i128) = if let Some(b) = clean.strip_suffix("Ki") {
        (b, 1 << 10)
    } else if let Some(b) = clean.strip_suffix("Mi") {
        (b, 1 << 20)
    } else if let Some(b) = clean.strip_suffix("Gi") {
        (b, 1 << 30)
    } else if let Some(b) = clean.strip_suffix('K') {
        (b, 1_000)
    } else if let Some(b) = clean.strip_suffix('M') {
        (b, 1_000_000)
    } else if let Some(b) = clean.strip_suffix('B') {
        (b, 1_000_000_000)
    } else if let Some(b) = clean.strip_suffix('T') {
        (b, 1_000_000_000_000)
    } else {
        (clean.as_str(), 1)
    };
    let has_suffix = body.len() != clean.len();
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], body[i + 1..].parse::<i32>().unwrap_or(i32::MAX)),
        None => (body, 0),
    };
    let is_float_syntax = mantissa.contains('.') || body.len() != mantissa.len();
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{int_part}{frac_part}");
    let float = || {
        let f: f64 = body.parse().unwrap_or(f64::INFINITY);
        ExprKind::Float(f * multiplier as f64)
    };
    if is_float_syntax && !has_suffix {
        return float();
    }
    // Exact integer arithmetic: digits x 10^(exponent - fraction digits) x multiplier.
    let Ok(mut value) = digits.parse::<i128>() else {
        return if is_float_syntax {
            float()
        } else {
            ExprKind::Overflow
        };
    };
    let scale = exponent as i64 - frac_part.len() as i64;
    value = match value.checked_mul(multiplier) {
        Some(v) => v,
        None => return ExprKind::Overflow,
    };
    if scale > 40 {
        return if is_float_syntax {
            float()
        } else {
            ExprKind::Overflow
        };
    }
    if scale >= 0 {
        for _ in 0..scale {
            value = match value.checked_mul(10) {
                Some(v) => v,
                None => {
                    return if is_float_syntax {
                        float()
                    } else {
                        ExprKind::Overflow
                    }
                }
            };
        }
    } else {
        let div = 10i128.checked_pow((-scale) as u32);
        match div {
            Some(d) if value % d == 0 => value /= d,
            _ => return float(),
        }
    }
    match i64::try_from(value) {
        Ok(v) => ExprKind::Int(v),
        Err(_) if is_float_syntax => float(),
        Err(_) => ExprKind::Overflow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_with_suffixes_are_exact() {
        assert_eq!(parse_number("2K"), ExprKind::Int(2_000));
        assert_eq!(parse_number("5.4B"), ExprKind::Int(5_400_000_000));
        assert_eq!(parse_number("32Ki"), ExprKind::Int(32_768));
        assert_eq!(parse_number("128Ki"), ExprKind::Int(131_072));
        assert_eq!(parse_number("1_000"), ExprKind::Int(1_000));
        assert_eq!(parse_number("2e-3"), ExprKind::Float(2e-3));
        assert_eq!(parse_number("0.5"), ExprKind::Float(0.5));
        assert_eq!(parse_number("1.5K"), ExprKind::Int(1_500));
        assert_eq!(parse_number("1.0005K"), ExprKind::Float(1000.5));
        assert_eq!(parse_number("99999999999999999999"), ExprKind::Overflow);
        assert_eq!(parse_number("9223372036854775807"), ExprKind::Int(i64::MAX));
    }

    #[test]
    fn doc_comments_attach_to_the_next_item() {
        let src = "// not a doc\n/// first\n/// second\nlet a = 1\n";
        let m = parse_module(src).unwrap();
        let Item::Def(d) = &m.items[0] else { panic!() };
        assert_eq!(d.doc.as_deref(), Some("first\nsecond"));
    }

    #[test]
    fn precedence_and_postfix() {
        let m =
            parse_module("let x = clip() + 0.5 * mask_regularization(fraction: 1/16, ratio: 0.4)")
                .unwrap();
        let Item::Def(d) = &m.items[0] else { panic!() };
        let ExprKind::Binary {
            op: BinOp::Add,
            rhs,
            ..
        } = &d.value.kind
        else {
            panic!("{:?}", d.value)
        };
        assert!(matches!(rhs.kind, ExprKind::Binary { op: BinOp::Mul, .. }));
        let m = parse_module("let t = frozen(core.vision).layer(-3) with { a: 1 }").unwrap();
        let Item::Def(d) = &m.items[0] else { panic!() };
        assert!(matches!(d.value.kind, ExprKind::With { .. }));
    }
}
