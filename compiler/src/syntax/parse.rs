//! Parse tree -> AST. The tree is an array in preorder (from the fast parser generated from
//! the grammar, or flattened from pest's tokens); the builder then walks it by index, one function per node kind,
//! punctuation skipped. Naming: `x` builds the node of rule `x` from its index.

use pest::Parser;

use super::ast::*;
use super::{fast, words};
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
    check_size(text)?;
    check_nesting(text)?;
    let mut b = Builder::new(text, tree(Rule::file, text)?);
    let mut items = Vec::new();
    let mut kids = b.kids(0);
    while let Some(k) = b.next(&mut kids) {
        match b.rule(k) {
            Rule::use_decl => items.push(Item::Use(b.use_decl(k))),
            Rule::let_decl => items.push(Item::Def(b.def(k, DefKind::Let))),
            Rule::model_decl => items.push(Item::Def(b.def(k, DefKind::Model))),
            Rule::data_decl => items.push(Item::Def(b.def(k, DefKind::Data))),
            Rule::stage_decl => items.push(Item::Stage(b.stage(k))),
            _ => {} // EOI
        }
    }
    b.finish()?;
    Ok(Module { items })
}

/// Parses a lone expression (the value of a `--set` override), with the same checks as a
/// file.
pub fn parse_expression(text: &str) -> Result<Expr, Box<Error>> {
    check_size(text)?;
    check_nesting(text)?;
    let mut b = Builder::new(text, tree(Rule::expr_only, text)?);
    let mut kids = b.kids(0);
    let mut expr = None;
    while let Some(k) = b.next(&mut kids) {
        if b.rule(k) == Rule::expr {
            expr = Some(b.expr(k));
        }
    }
    b.finish()?;
    Ok(expr.expect("expr_only holds an expression"))
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

/// Refuses text longer than `MAX_FILE_BYTES`.
fn check_size(text: &str) -> Result<(), Box<Error>> {
    if text.len() > MAX_FILE_BYTES {
        return Err(Box::new(Error::FileTooLarge {
            span: Span::new(0, 0).into(),
            bytes: text.len(),
            limit: MAX_FILE_BYTES,
        }));
    }
    Ok(())
}

/// Refuses bracket nesting deeper than `MAX_NESTING`, skipping strings and comments.
fn check_nesting(text: &str) -> Result<(), Box<Error>> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        // Most bytes are none of `/ " ( [ { ) ] }`: skip them in a tight loop.
        while i < bytes.len() && !SPECIAL[usize::from(bytes[i])] {
            i += 1;
        }
        let Some(&byte) = bytes.get(i) else { break };
        match byte {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                i += memchr_newline(&bytes[i..]);
                continue;
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

/// The bytes that `check_nesting` looks at.
static SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut k = 0;
    let special = b"/\"([{)]}";
    while k < special.len() {
        t[special[k] as usize] = true;
        k += 1;
    }
    t
};

/// The offset of the first `\n` in `bytes`, or its length.
fn memchr_newline(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(bytes.len())
}

/// The parse tree of `text` as `rule`: the fast parser's, and when it refuses the text,
/// pest's error in words.
fn tree(rule: Rule, text: &str) -> Result<Vec<Node>, Box<Error>> {
    if let Some(nodes) = fast::parse(rule, text) {
        return Ok(nodes);
    }
    // Both parsers come from the same grammar, so pest refuses it too (the differential
    // test holds them to that); should they ever disagree, pest's tree is the reference.
    match PexParser::parse(rule, text) {
        Ok(pairs) => Ok(pest_tree(pairs)),
        Err(e) => Err(Box::new(words::syntax_error(text, e))),
    }
}

/// pest's parse tree in the same preorder form as the fast parser's.
fn pest_tree(pairs: pest::iterators::Pairs<'_, Rule>) -> Vec<Node> {
    use pest::Token;
    let tokens = pairs.tokens();
    let mut nodes = Vec::with_capacity(tokens.len() / 2);
    let mut open: Vec<usize> = Vec::new();
    for token in tokens {
        match token {
            Token::Start { rule, pos } => {
                open.push(nodes.len());
                nodes.push(Node {
                    rule,
                    start: small(pos.pos()),
                    end: small(pos.pos()),
                    next: 0,
                });
            }
            Token::End { pos, .. } => {
                if let Some(i) = open.pop() {
                    let next = nodes.len();
                    let node = &mut nodes[i];
                    node.end = small(pos.pos());
                    node.next = small(next);
                }
            }
        }
    }
    nodes
}

/// The generated parser alone, for the benchmark: the number of nodes in the tree of
/// `text` as a file, or `None` when it does not parse.
#[doc(hidden)]
pub fn generated_tree_len(text: &str) -> Option<usize> {
    fast::parse(Rule::file, text).map(|nodes| nodes.len())
}

/// Whether the fast parser and pest agree on `text` (parsed as a file, or as a lone
/// expression): both refuse it, or both accept it with the same tree. For the differential
/// tests; `Err` says how they differ.
#[doc(hidden)]
pub fn parsers_agree(text: &str, as_expression: bool) -> Result<(), String> {
    let rule = if as_expression {
        Rule::expr_only
    } else {
        Rule::file
    };
    let fast = fast::parse(rule, text);
    let pest = PexParser::parse(rule, text).map(pest_tree);
    match (fast, pest) {
        (None, Err(_)) => Ok(()),
        (Some(f), Ok(p)) if f == p => Ok(()),
        (Some(f), Ok(p)) => {
            let at = f
                .iter()
                .zip(&p)
                .position(|(a, b)| a != b)
                .unwrap_or(f.len().min(p.len()));
            Err(format!(
                "different trees: node {at} is {:?} (fast) against {:?} (pest); {} against {} nodes",
                f.get(at),
                p.get(at),
                f.len(),
                p.len()
            ))
        }
        (Some(_), Err(e)) => Err(format!("the fast parser accepts what pest refuses: {e}")),
        (None, Ok(_)) => Err("the fast parser refuses what pest accepts".into()),
    }
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

/// One node of pest's parse tree: its rule, its span, and the index just past its subtree
/// (its next sibling, when it has one). 32-bit offsets (files are at most
/// `MAX_FILE_BYTES`): a large file's tree is half the memory to write and read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Node {
    pub(super) rule: Rule,
    pub(super) start: u32,
    pub(super) end: u32,
    pub(super) next: u32,
}

impl Node {
    fn start(&self) -> usize {
        self.start as usize
    }

    fn end(&self) -> usize {
        self.end as usize
    }

    fn next(&self) -> usize {
        self.next as usize
    }
}

/// An offset or index that `MAX_FILE_BYTES` keeps within 32 bits.
fn small(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The children of a node still to visit.
#[derive(Clone, Copy)]
struct Kids {
    at: usize,
    end: usize,
}

/// The AST builder over the flattened tree. What the grammar leaves to it: keywords used as
/// names, and expressions with more than `MAX_OPERATORS` infix, prefix or postfix operators;
/// the first such problem in the file (by position) is the error.
struct Builder<'t> {
    text: &'t str,
    nodes: Vec<Node>,
    error: Option<(usize, Box<Error>)>,
}

/// A placeholder for an expression that is refused (the builder's result is then dropped).
const REFUSED: Expr = Expr {
    kind: ExprKind::Overflow,
    span: Span { start: 0, end: 0 },
};

impl<'t> Builder<'t> {
    fn new(text: &'t str, nodes: Vec<Node>) -> Self {
        Builder {
            text,
            nodes,
            error: None,
        }
    }

    fn finish(self) -> Result<(), Box<Error>> {
        match self.error {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }

    /// Keeps the first problem of the file.
    fn refuse(&mut self, pos: usize, e: Error) {
        if self.error.as_ref().is_none_or(|(p, _)| pos < *p) {
            self.error = Some((pos, Box::new(e)));
        }
    }

    fn rule(&self, k: usize) -> Rule {
        self.nodes[k].rule
    }

    fn span(&self, k: usize) -> Span {
        Span::new(self.nodes[k].start(), self.nodes[k].end())
    }

    fn str(&self, k: usize) -> &'t str {
        &self.text[self.nodes[k].start()..self.nodes[k].end()]
    }

    /// The children of `k`; `next` skips punctuation and keywords.
    fn kids(&self, k: usize) -> Kids {
        Kids {
            at: k + 1,
            end: self.nodes.get(k).map_or(k + 1, Node::next),
        }
    }

    fn next(&self, kids: &mut Kids) -> Option<usize> {
        while kids.at < kids.end {
            let i = kids.at;
            kids.at = self.nodes[i].next().max(i + 1);
            if !is_token(self.nodes[i].rule) {
                return Some(i);
            }
        }
        None
    }

    /// How many meaningful children `k` has: the capacity of the vector that holds them.
    fn count(&self, k: usize) -> usize {
        let mut kids = self.kids(k);
        let mut n = 0;
        while self.next(&mut kids).is_some() {
            n += 1;
        }
        n
    }

    fn peek(&self, kids: &Kids) -> Option<usize> {
        let mut copy = *kids;
        self.next(&mut copy)
    }

    /// The next meaningful child, which the grammar guarantees.
    fn child(&self, kids: &mut Kids, what: &str) -> usize {
        self.next(kids)
            .unwrap_or_else(|| panic!("the grammar guarantees {what}"))
    }

    /// A name: `ident`, `field_name` or `callee`. Keywords are refused where they would name
    /// something (`ident`).
    fn ident(&mut self, k: usize) -> Ident {
        let word = self.str(k);
        if self.rule(k) == Rule::ident && is_keyword(word) {
            self.refuse_keyword(k);
        }
        Ident {
            name: word.to_string(),
            span: self.span(k),
        }
    }

    fn refuse_keyword(&mut self, k: usize) {
        let word = self.str(k);
        let span = self.span(k);
        self.refuse(
            span.start(),
            Error::Syntax {
                message: format!("expected a name, found `{word}`"),
                label: "expected a name".into(),
                span: span.into(),
                help: Some(format!("`{word}` is a keyword; choose another name")),
            },
        );
    }

    fn use_decl(&mut self, k: usize) -> Use {
        let whole = self.span(k);
        let mut kids = self.kids(k);
        let path = self.child(&mut kids, "a module path");
        let source_span = self.span(path);
        let mut inner = self.kids(path);
        let source_node = self.child(&mut inner, "a module");
        let source = match self.rule(source_node) {
            Rule::string => ModuleSource::File(unescape(self.str(source_node))),
            _ => {
                let mut parts: Vec<&str> = Vec::new();
                let mut names = self.kids(source_node);
                while let Some(n) = self.next(&mut names) {
                    if is_keyword(self.str(n)) {
                        self.refuse_keyword(n);
                    }
                    parts.push(self.str(n));
                }
                ModuleSource::Std(parts.join("::"))
            }
        };
        let mut imports = Vec::new();
        while let Some(imp) = self.next(&mut kids) {
            let mut names = self.kids(imp);
            let n = self.child(&mut names, "an imported name");
            let name = self.ident(n);
            let alias = self.next(&mut names).map(|a| self.ident(a));
            imports.push(Import { name, alias });
        }
        Use {
            source,
            source_span,
            imports,
            span: whole,
        }
    }

    fn def(&mut self, k: usize, kind: DefKind) -> Def {
        let whole = self.span(k);
        let mut kids = self.kids(k);
        let n = self.child(&mut kids, "a name");
        let name = self.ident(n);
        let v = self.child(&mut kids, "a value");
        let value = self.expr(v);
        Def {
            kind,
            name,
            value,
            doc: doc_above(self.text, whole.start()),
            span: whole,
        }
    }

    fn stage(&mut self, k: usize) -> Stage {
        let whole = self.span(k);
        let mut kids = self.kids(k);
        let n = self.child(&mut kids, "a stage name");
        let name = self.ident(n);
        let mut items = Vec::with_capacity(self.count(k).saturating_sub(1));
        while let Some(item) = self.next(&mut kids) {
            let item = match self.rule(item) {
                Rule::phase_decl => {
                    let s = self.span(item);
                    let mut parts = self.kids(item);
                    let n = self.child(&mut parts, "a phase name");
                    let name = self.ident(n);
                    let mut fields = Vec::with_capacity(self.count(item).saturating_sub(1));
                    while let Some(f) = self.next(&mut parts) {
                        fields.push(self.field(f));
                    }
                    StageItem::Phase(Phase {
                        name,
                        fields,
                        span: s,
                    })
                }
                Rule::teacher_decl => StageItem::Teacher(self.binding(item)),
                Rule::export_decl => StageItem::Export(self.binding(item)),
                _ => StageItem::Field(self.field(item)),
            };
            items.push(item);
        }
        Stage {
            name,
            items,
            doc: doc_above(self.text, whole.start()),
            span: whole,
        }
    }

    fn binding(&mut self, k: usize) -> Binding {
        let s = self.span(k);
        let mut parts = self.kids(k);
        let n = self.child(&mut parts, "a name");
        let name = self.ident(n);
        let v = self.child(&mut parts, "a value");
        let value = self.expr(v);
        Binding {
            name,
            value,
            span: s,
        }
    }

    fn field(&mut self, k: usize) -> Field {
        let mut parts = self.kids(k);
        let n = self.child(&mut parts, "a field name");
        let name = self.ident(n);
        let v = self.child(&mut parts, "a field value");
        let value = self.expr(v);
        Field {
            span: name.span.to(value.span),
            name,
            value,
        }
    }

    /// An expression: its children are one flat sequence of operands (prefix operators, a
    /// primary, postfix operators) joined by infix operators. Postfix binds tightest, then
    /// `-`, then `*` `/`, then `+` `-`, all left-associative.
    fn expr(&mut self, k: usize) -> Expr {
        let mut kids = self.kids(k);
        let mut ops = 0usize;
        let mut sum = match self.product(&mut kids, &mut ops) {
            Some(e) => e,
            None => return REFUSED,
        };
        while let Some(op) = self.peek(&kids) {
            let op_kind = match self.rule(op) {
                Rule::add => BinOp::Add,
                Rule::sub => BinOp::Sub,
                _ => break,
            };
            self.next(&mut kids);
            if !self.count_op(op, &mut ops) {
                return REFUSED;
            }
            let rhs = match self.product(&mut kids, &mut ops) {
                Some(e) => e,
                None => return REFUSED,
            };
            sum = binary(op_kind, sum, rhs);
        }
        sum
    }

    /// Counts one more operator of an expression; false (and the error) past the limit.
    fn count_op(&mut self, op: usize, ops: &mut usize) -> bool {
        *ops += 1;
        if *ops > MAX_OPERATORS {
            let start = self.nodes[op].start();
            self.refuse(
                start,
                Error::TooManyOperators {
                    limit: MAX_OPERATORS,
                    span: Span::new(start, start + 1).into(),
                },
            );
            return false;
        }
        true
    }

    /// Operands joined by `*` and `/`; `None` past the operator limit.
    fn product(&mut self, kids: &mut Kids, ops: &mut usize) -> Option<Expr> {
        let mut acc = self.operand(kids, ops)?;
        while let Some(op) = self.peek(kids) {
            let op_kind = match self.rule(op) {
                Rule::mul => BinOp::Mul,
                Rule::div => BinOp::Div,
                _ => break,
            };
            self.next(kids);
            if !self.count_op(op, ops) {
                return None;
            }
            let rhs = self.operand(kids, ops)?;
            acc = binary(op_kind, acc, rhs);
        }
        Some(acc)
    }

    /// `-`* primary postfix*; `None` past the operator limit.
    fn operand(&mut self, kids: &mut Kids, ops: &mut usize) -> Option<Expr> {
        let mut negs: Vec<usize> = Vec::new();
        let mut p = self.child(kids, "an operand");
        while self.rule(p) == Rule::neg {
            if !self.count_op(p, ops) {
                return None;
            }
            negs.push(p);
            p = self.child(kids, "an operand");
        }
        let mut e = self.primary(p);
        while let Some(op) = self.peek(kids) {
            if !matches!(self.rule(op), Rule::member | Rule::with_update) {
                break;
            }
            self.next(kids);
            if !self.count_op(op, ops) {
                return None;
            }
            e = self.postfix(e, op);
        }
        for &neg in negs.iter().rev() {
            e = Expr {
                span: self.span(neg).to(e.span),
                kind: ExprKind::Neg(Box::new(e)),
            };
        }
        Some(e)
    }

    /// `.name`, `.name(args)` or `with { .. }` applied to `base`.
    fn postfix(&mut self, base: Expr, op: usize) -> Expr {
        let whole = base.span.to(self.span(op));
        let mut m = self.kids(op);
        let kind = match self.rule(op) {
            Rule::member => {
                let n = self.child(&mut m, "a member name");
                let name = self.ident(n);
                let args = self.next(&mut m).map(|a| self.args(a));
                ExprKind::Member {
                    base: Box::new(base),
                    name,
                    args,
                }
            }
            _ => {
                let record = self.child(&mut m, "a record");
                ExprKind::With {
                    base: Box::new(base),
                    fields: self.record_fields(record),
                }
            }
        };
        Expr { span: whole, kind }
    }

    fn primary(&mut self, k: usize) -> Expr {
        let mut s = self.span(k);
        let kind = match self.rule(k) {
            Rule::number => parse_number(self.str(k)),
            Rule::string => ExprKind::Str(unescape(self.str(k))),
            Rule::boolean => ExprKind::Bool(self.str(k) == "true"),
            Rule::name_or_call => {
                let mut parts = self.kids(k);
                let c = self.child(&mut parts, "a name");
                let callee = self.ident(c);
                match self.next(&mut parts) {
                    Some(args) => ExprKind::Call {
                        callee,
                        args: self.args(args),
                    },
                    None => {
                        // The node also holds the whitespace skipped while looking for `(`.
                        s = callee.span;
                        ExprKind::Name(callee.name)
                    }
                }
            }
            Rule::list => ExprKind::List(self.exprs(k)),
            Rule::tuple_or_paren => {
                let mut all = self.kids(k);
                let mut has_comma = false;
                while all.at < all.end {
                    has_comma |= self.nodes[all.at].rule == Rule::comma;
                    all.at = self.nodes[all.at].next().max(all.at + 1);
                }
                let mut items = self.exprs(k);
                if items.len() == 1 && !has_comma {
                    ExprKind::Paren(Box::new(items.remove(0)))
                } else {
                    ExprKind::Tuple(items)
                }
            }
            _ => ExprKind::Record(self.record_fields(k)),
        };
        Expr { kind, span: s }
    }

    /// The expressions among the children of `k`.
    fn exprs(&mut self, k: usize) -> Vec<Expr> {
        let mut kids = self.kids(k);
        let mut out = Vec::with_capacity(self.count(k));
        while let Some(e) = self.next(&mut kids) {
            out.push(self.expr(e));
        }
        out
    }

    fn args(&mut self, k: usize) -> Vec<Arg> {
        let mut kids = self.kids(k);
        let mut out = Vec::with_capacity(self.count(k));
        while let Some(a) = self.next(&mut kids) {
            let s = self.span(a);
            out.push(match self.rule(a) {
                Rule::named_arg => {
                    let mut parts = self.kids(a);
                    let n = self.child(&mut parts, "an argument name");
                    let name = self.ident(n);
                    let v = self.child(&mut parts, "an argument value");
                    Arg {
                        name: Some(name),
                        value: self.expr(v),
                        span: s,
                    }
                }
                _ => Arg {
                    name: None,
                    value: self.expr(a),
                    span: s,
                },
            });
        }
        out
    }

    fn record_fields(&mut self, k: usize) -> Vec<RecordField> {
        let mut kids = self.kids(k);
        let mut out = Vec::with_capacity(self.count(k));
        while let Some(f) = self.next(&mut kids) {
            let s = self.span(f);
            let mut parts = self.kids(f);
            let n = self.child(&mut parts, "a field name");
            let name = self.ident(n);
            let v = self.child(&mut parts, "a field value");
            out.push(RecordField {
                name,
                value: self.expr(v),
                span: s,
            });
        }
        out
    }
}

fn binary(op: BinOp, lhs: Expr, rhs: Expr) -> Expr {
    Expr {
        span: lhs.span.to(rhs.span),
        kind: ExprKind::Binary {
            op,
            lhs: Box::new(lhs),
            rhs: Box::new(rhs),
        },
    }
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

/// The common numbers without allocating: digits with an optional suffix (`64`, `24K`,
/// `64Ki`), and decimals without a suffix (`0.5`, `2e-3`). `None`: the general path.
fn parse_plain_number(token: &str) -> Option<ExprKind> {
    let bytes = token.as_bytes();
    if bytes.contains(&b'_') {
        return None;
    }
    let (body, multiplier): (&[u8], i128) = match bytes {
        [b @ .., b'K', b'i'] => (b, 1 << 10),
        [b @ .., b'M', b'i'] => (b, 1 << 20),
        [b @ .., b'G', b'i'] => (b, 1 << 30),
        [b @ .., b'K'] => (b, 1_000),
        [b @ .., b'M'] => (b, 1_000_000),
        [b @ .., b'B'] => (b, 1_000_000_000),
        [b @ .., b'T'] => (b, 1_000_000_000_000),
        b => (b, 1),
    };
    if body.is_empty() {
        return None;
    }
    if body.iter().all(u8::is_ascii_digit) {
        let mut value: i128 = 0;
        for &d in body {
            value = match value
                .checked_mul(10)
                .and_then(|v| v.checked_add(i128::from(d - b'0')))
            {
                Some(v) => v,
                None => return Some(ExprKind::Overflow),
            };
        }
        return Some(match value.checked_mul(multiplier).map(i64::try_from) {
            Some(Ok(v)) => ExprKind::Int(v),
            _ => ExprKind::Overflow,
        });
    }
    if multiplier == 1 && body.iter().any(|b| matches!(b, b'.' | b'e' | b'E')) {
        // Decimal syntax without a suffix is a float, as in the general path.
        let f: f64 = token.parse().unwrap_or(f64::INFINITY);
        return Some(ExprKind::Float(f));
    }
    None
}

/// A number token to its value, exactly: `5.4B` is the integer 5_400_000_000.
pub fn parse_number(token: &str) -> ExprKind {
    parse_plain_number(token).unwrap_or_else(|| parse_any_number(token))
}

/// `parse_number` for every number token.
fn parse_any_number(token: &str) -> ExprKind {
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
    fn the_fast_path_for_numbers_agrees_with_the_general_one() {
        let mantissas = [
            "0",
            "7",
            "64",
            "1000",
            "0.5",
            "0.95",
            "2.",
            "12.25",
            "9223372036854775807",
            "9223372036854775808",
            "99999999999999999999",
            "170141183460469231731687303715884105728",
        ];
        let exponents = ["", "e3", "e-3", "E+2", "e400", "e-400"];
        let suffixes = ["", "K", "M", "B", "T", "Ki", "Mi", "Gi"];
        for m in mantissas {
            for e in exponents {
                for s in suffixes {
                    let token = format!("{m}{e}{s}");
                    if let Some(fast) = parse_plain_number(&token) {
                        assert_eq!(fast, parse_any_number(&token), "{token}");
                    }
                }
            }
        }
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
