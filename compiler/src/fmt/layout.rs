//! The AST laid out as a `Doc`, with the source's comments and blank lines put back.
//!
//! The AST holds no comments, so they are found in the source text and claimed by position,
//! walking the tree in source order:
//! - between statements (items, stage items, phase fields): comments on their own lines lead
//!   the next statement, a comment on a statement's last line trails it, the rest dangle
//!   before the closing `}`;
//! - between the elements of a bracketed list (arguments, list and tuple items, record
//!   fields, imports) and between the operands of a `+`/`-` chain: the same, one level in;
//! - anywhere else (`model // x` `m = ..`, `frozen(a) // x` `.layer(3)`): the comment moves
//!   to its own line above the statement, since a comment cannot sit inside a line.
//!
//! Any comment forces the bracket or chain around it onto several lines.

use super::doc::Doc;
use crate::syntax::ast::*;

/// A `//` comment of the source, `//` included, trailing whitespace dropped.
#[derive(Clone, Copy, Debug)]
pub struct Comment<'a> {
    pub start: usize,
    /// The end of its line (the `\n`, or the end of the file).
    pub end: usize,
    pub text: &'a str,
}

impl Comment<'_> {
    fn is_doc(&self) -> bool {
        self.text.starts_with("///")
    }
}

/// Every comment of a file that parses, in order. Strings hold no comments.
pub fn scan_comments(text: &str) -> Vec<Comment<'_>> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                let start = i;
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                out.push(Comment {
                    start,
                    end: i,
                    text: text[start..i].trim_end(),
                });
            }
            _ => i += 1,
        }
    }
    out
}

/// Where an expression really ends. A member without arguments (`core.vision`) has a span
/// that runs over the whitespace and comments after it (pest skips them while looking for
/// `(`), and operators inherit it.
pub fn end(e: &Expr) -> usize {
    match &e.kind {
        ExprKind::Member {
            name, args: None, ..
        } => name.span.end(),
        ExprKind::Binary { rhs, .. } => end(rhs),
        ExprKind::Neg(inner) => end(inner),
        _ => e.span.end(),
    }
}

/// A statement of a block: what may stand on lines of its own.
#[derive(Clone, Copy)]
enum Stmt<'m> {
    Use(&'m Use),
    Def(&'m Def),
    Stage(&'m Stage),
    Field(&'m Field),
    Phase(&'m Phase),
    Teacher(&'m Binding),
    Export(&'m Binding),
}

/// One line (or several, for a broken statement) of a block.
struct Row {
    /// A blank line above it in the source.
    blank: bool,
    doc: Doc,
    /// A `///` comment: kept right above the item it documents.
    doc_comment: bool,
}

/// An element of a bracketed list: its source range and its layout.
struct Elem {
    start: usize,
    end: usize,
    doc: Doc,
}

/// The comma after the last element of a bracketed list.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Trail {
    /// Only when the list is broken over lines.
    IfBroken,
    /// Always: `(a,)` is a tuple, `(a)` is not.
    Always,
    /// Never: `(a + b)` is a parenthesised expression.
    Never,
}

pub struct Layout<'a> {
    text: &'a str,
    comments: Vec<Comment<'a>>,
    taken: Vec<bool>,
}

impl<'a> Layout<'a> {
    pub fn new(text: &'a str) -> Self {
        let comments = scan_comments(text);
        let taken = vec![false; comments.len()];
        Layout {
            text,
            comments,
            taken,
        }
    }

    /// The whole file, ending with one newline (nothing for a file without items or
    /// comments).
    pub fn module(&mut self, module: &Module) -> Doc {
        let stmts: Vec<Stmt> = module
            .items
            .iter()
            .map(|item| match item {
                Item::Use(u) => Stmt::Use(u),
                Item::Def(d) => Stmt::Def(d),
                Item::Stage(s) => Stmt::Stage(s),
            })
            .collect();
        let rows = self.block(&stmts, 0, self.text.len());
        if rows.is_empty() {
            return Doc::Concat(Vec::new());
        }
        Doc::Concat(vec![rows_doc(rows), Doc::HardLine])
    }

    // ------------------------------------------------------------ comments and positions

    /// Claims the unclaimed comments starting in `lo..hi`.
    fn take(&mut self, lo: usize, hi: usize) -> Vec<Comment<'a>> {
        let first = self.comments.partition_point(|c| c.start < lo);
        let mut out = Vec::new();
        for i in first..self.comments.len() {
            if self.comments[i].start >= hi {
                break;
            }
            if !self.taken[i] {
                self.taken[i] = true;
                out.push(self.comments[i]);
            }
        }
        out
    }

    fn has_comment(&self, lo: usize, hi: usize) -> bool {
        let first = self.comments.partition_point(|c| c.start < lo);
        self.comments[first..]
            .iter()
            .zip(&self.taken[first..])
            .take_while(|(c, _)| c.start < hi)
            .any(|(_, taken)| !taken)
    }

    /// Claims the comment that ends the line `end` is on, if it starts before `limit`.
    fn take_trailing(&mut self, end: usize, limit: usize) -> Option<Comment<'a>> {
        let i = self.comments.partition_point(|c| c.start < end);
        let c = *self.comments.get(i)?;
        if self.taken[i] || c.start >= limit || !self.same_line(end, c.start) {
            return None;
        }
        self.taken[i] = true;
        Some(c)
    }

    fn same_line(&self, a: usize, b: usize) -> bool {
        !self.text[a..b].contains('\n')
    }

    /// A blank line between two positions (only whitespace and punctuation lie between).
    fn blank(&self, a: usize, b: usize) -> bool {
        self.text[a..b].matches('\n').nth(1).is_some()
    }

    /// The position of the next token after `from`, which the grammar says is `token`.
    fn find(&self, from: usize, token: &str) -> usize {
        let bytes = self.text.as_bytes();
        let mut pos = from;
        loop {
            while pos < bytes.len() && matches!(bytes[pos], b' ' | b'\t' | b'\r' | b'\n') {
                pos += 1;
            }
            if bytes[pos..].starts_with(b"//") {
                while pos < bytes.len() && bytes[pos] != b'\n' {
                    pos += 1;
                }
            } else {
                break;
            }
        }
        debug_assert!(
            self.text[pos..].starts_with(token),
            "expected `{token}` at {pos}"
        );
        pos
    }

    fn slice(&self, start: usize, end: usize) -> &'a str {
        &self.text[start..end]
    }

    // ------------------------------------------------------------ blocks and statements

    /// The statements of a block between `lo` and `hi`, with the comments around them.
    fn block(&mut self, stmts: &[Stmt], lo: usize, hi: usize) -> Vec<Row> {
        let mut rows: Vec<Row> = Vec::new();
        let mut prev = lo;
        for (i, stmt) in stmts.iter().enumerate() {
            let (start, end) = self.bounds(*stmt);
            let limit = stmts.get(i + 1).map_or(hi, |next| self.bounds(*next).0);
            let first_leading = rows.len();
            for c in self.take(prev, start) {
                rows.push(comment_row(self.blank(prev, c.start), c));
                prev = c.end;
            }
            let blank = self.blank(prev, start);
            let mut doc = self.stmt(*stmt);
            let hoisted = self.take(start, end);
            prev = end;
            if let Some(c) = self.take_trailing(end, limit) {
                doc = Doc::Concat(vec![doc, Doc::LineSuffix(c.text.into())]);
                prev = c.end;
            }
            rows.push(Row {
                blank,
                doc,
                doc_comment: false,
            });
            if !hoisted.is_empty() {
                hoist(&mut rows, first_leading, &hoisted);
            }
        }
        for c in self.take(prev, hi) {
            rows.push(comment_row(self.blank(prev, c.start), c));
            prev = c.end;
        }
        rows
    }

    /// Where a statement starts and ends in the source.
    fn bounds(&self, stmt: Stmt) -> (usize, usize) {
        match stmt {
            Stmt::Use(u) => (u.span.start(), u.span.end()),
            Stmt::Def(d) => (d.span.start(), end(&d.value)),
            Stmt::Stage(s) => (s.span.start(), s.span.end()),
            Stmt::Field(f) => (f.name.span.start(), end(&f.value)),
            Stmt::Phase(p) => (p.span.start(), p.span.end()),
            Stmt::Teacher(b) | Stmt::Export(b) => (b.span.start(), end(&b.value)),
        }
    }

    fn stmt(&mut self, stmt: Stmt) -> Doc {
        match stmt {
            Stmt::Use(u) => self.use_decl(u),
            Stmt::Def(d) => {
                let value = self.expr(&d.value);
                Doc::Concat(vec![
                    Doc::text(format!("{} {} = ", d.kind.keyword(), d.name.name)),
                    value,
                ])
            }
            Stmt::Stage(s) => self.stage(s),
            Stmt::Field(f) => self.field(f),
            Stmt::Phase(p) => self.phase(p),
            Stmt::Teacher(b) => self.binding("teacher", b),
            Stmt::Export(b) => self.binding("export", b),
        }
    }

    fn use_decl(&mut self, u: &Use) -> Doc {
        let path = match &u.source {
            ModuleSource::Std(path) => path.clone(),
            // The string as written, escapes and all.
            ModuleSource::File(_) => self
                .slice(u.source_span.start(), u.source_span.end())
                .trim_end()
                .to_string(),
        };
        let sep = self.find(u.source_span.end(), "::");
        let open = self.find(sep + 2, "{");
        let imports = u
            .imports
            .iter()
            .map(|i| Elem {
                start: i.name.span.start(),
                end: i.local().span.end(),
                doc: Doc::text(match &i.alias {
                    Some(alias) => format!("{} as {}", i.name.name, alias.name),
                    None => i.name.name.clone(),
                }),
            })
            .collect();
        let list = self.seq(
            ("{", "}"),
            false,
            (open, u.span.end() - 1),
            imports,
            Trail::IfBroken,
        );
        Doc::Concat(vec![Doc::text(format!("use {path}::")), list])
    }

    fn stage(&mut self, s: &Stage) -> Doc {
        let open = self.find(s.name.span.end(), "{");
        let stmts: Vec<Stmt> = s
            .items
            .iter()
            .map(|item| match item {
                StageItem::Field(f) => Stmt::Field(f),
                StageItem::Phase(p) => Stmt::Phase(p),
                StageItem::Teacher(b) => Stmt::Teacher(b),
                StageItem::Export(b) => Stmt::Export(b),
            })
            .collect();
        let rows = self.block(&stmts, open + 1, s.span.end() - 1);
        braced_block(format!("stage {} {{", s.name.name), rows)
    }

    /// A phase written on one line stays on one line when it fits and holds no comment;
    /// otherwise one field per line.
    fn phase(&mut self, p: &Phase) -> Doc {
        let open = self.find(p.name.span.end(), "{");
        let close = p.span.end() - 1;
        let head = format!("phase {} {{", p.name.name);
        let one_line =
            self.same_line(p.span.start(), p.span.end()) && !self.has_comment(open, close);
        if !one_line {
            let stmts: Vec<Stmt> = p.fields.iter().map(Stmt::Field).collect();
            let rows = self.block(&stmts, open + 1, close);
            return braced_block(head, rows);
        }
        if p.fields.is_empty() {
            return Doc::text(format!("{head}}}"));
        }
        let mut fields = Vec::new();
        for (i, f) in p.fields.iter().enumerate() {
            if i > 0 {
                fields.push(Doc::if_break(Doc::text(""), Doc::text(",")));
                fields.push(Doc::Line);
            }
            fields.push(self.field(f));
        }
        Doc::group(Doc::Concat(vec![
            Doc::Text(head),
            Doc::indent(Doc::Concat(vec![Doc::Line, Doc::Concat(fields)])),
            Doc::Line,
            Doc::text("}"),
        ]))
    }

    fn field(&mut self, f: &Field) -> Doc {
        let value = self.expr(&f.value);
        Doc::Concat(vec![Doc::text(format!("{}: ", f.name.name)), value])
    }

    fn binding(&mut self, keyword: &str, b: &Binding) -> Doc {
        let value = self.expr(&b.value);
        Doc::Concat(vec![
            Doc::text(format!("{keyword} {} = ", b.name.name)),
            value,
        ])
    }

    // ------------------------------------------------------------ expressions

    fn expr(&mut self, e: &Expr) -> Doc {
        match &e.kind {
            // Literals as written: `2K`, `32Ki`, `1_000`, `2e-3`, escapes in strings.
            ExprKind::Int(_) | ExprKind::Float(_) | ExprKind::Overflow | ExprKind::Str(_) => {
                Doc::text(self.slice(e.span.start(), e.span.end()))
            }
            ExprKind::Bool(b) => Doc::text(if *b { "true" } else { "false" }),
            ExprKind::Name(name) => Doc::text(name.clone()),
            ExprKind::Call { callee, args } => {
                let open = self.find(callee.span.end(), "(");
                let args = self.args(args, open, e.span.end() - 1);
                Doc::Concat(vec![Doc::text(callee.name.clone()), args])
            }
            ExprKind::List(items) => {
                let elems = self.elems(items);
                self.seq(
                    ("[", "]"),
                    false,
                    (e.span.start(), e.span.end() - 1),
                    elems,
                    Trail::IfBroken,
                )
            }
            ExprKind::Tuple(items) => {
                let trail = if items.len() == 1 {
                    Trail::Always
                } else {
                    Trail::IfBroken
                };
                let elems = self.elems(items);
                self.seq(
                    ("(", ")"),
                    false,
                    (e.span.start(), e.span.end() - 1),
                    elems,
                    trail,
                )
            }
            ExprKind::Paren(inner) => {
                let elems = self.elems(std::slice::from_ref(inner.as_ref()));
                self.seq(
                    ("(", ")"),
                    false,
                    (e.span.start(), e.span.end() - 1),
                    elems,
                    Trail::Never,
                )
            }
            ExprKind::Record(fields) => self.record(fields, e.span.start(), e.span.end() - 1),
            ExprKind::Member { base, name, args } => {
                let mut parts = vec![self.expr(base), Doc::text(format!(".{}", name.name))];
                if let Some(args) = args {
                    let open = self.find(name.span.end(), "(");
                    parts.push(self.args(args, open, e.span.end() - 1));
                }
                Doc::Concat(parts)
            }
            ExprKind::With { base, fields } => {
                let base_doc = self.expr(base);
                let with = self.find(end(base), "with");
                let open = self.find(with + "with".len(), "{");
                let record = self.record(fields, open, e.span.end() - 1);
                Doc::Concat(vec![base_doc, Doc::text(" with "), record])
            }
            ExprKind::Binary {
                op: BinOp::Add | BinOp::Sub,
                ..
            } => self.chain(e),
            ExprKind::Binary { op, lhs, rhs } => {
                // `1/16` is a fraction: written tight, as the language documents it.
                let tight = *op == BinOp::Div
                    && matches!(lhs.kind, ExprKind::Int(_))
                    && matches!(rhs.kind, ExprKind::Int(_));
                let symbol = if tight {
                    op.symbol().to_string()
                } else {
                    format!(" {} ", op.symbol())
                };
                let lhs = self.expr(lhs);
                let rhs = self.expr(rhs);
                Doc::Concat(vec![lhs, Doc::Text(symbol), rhs])
            }
            ExprKind::Neg(inner) => Doc::Concat(vec![Doc::text("-"), self.expr(inner)]),
        }
    }

    /// `a + b - c`: on one line if it fits, otherwise one operand per line, each continuation
    /// line starting with its operator, one level deeper.
    fn chain(&mut self, e: &Expr) -> Doc {
        let mut operands = Vec::new();
        let mut ops = Vec::new();
        let mut cur = e;
        while let ExprKind::Binary {
            op: op @ (BinOp::Add | BinOp::Sub),
            lhs,
            rhs,
        } = &cur.kind
        {
            operands.push(rhs.as_ref());
            ops.push(*op);
            cur = lhs;
        }
        operands.push(cur);
        operands.reverse();
        ops.reverse();
        let first = self.expr(operands[0]);
        let mut rest = Vec::new();
        let mut prev = end(operands[0]);
        for (operand, op) in operands[1..].iter().zip(ops) {
            let doc = self.expr(operand);
            let comments = self.take(prev, operand.span.start());
            let mut leading = &comments[..];
            if let Some(c) = comments.first() {
                if self.same_line(prev, c.start) {
                    rest.push(Doc::LineSuffix(c.text.into()));
                    leading = &comments[1..];
                }
            }
            rest.push(Doc::Line);
            for c in leading {
                rest.push(Doc::text(c.text));
                rest.push(Doc::HardLine);
            }
            rest.push(Doc::text(format!("{} ", op.symbol())));
            rest.push(doc);
            prev = end(operand);
        }
        Doc::group(Doc::Concat(vec![first, Doc::indent(Doc::Concat(rest))]))
    }

    fn elems(&mut self, items: &[Expr]) -> Vec<Elem> {
        items
            .iter()
            .map(|item| Elem {
                start: item.span.start(),
                end: end(item),
                doc: self.expr(item),
            })
            .collect()
    }

    /// `(args)`, with `open` and `close` the positions of the parentheses.
    fn args(&mut self, args: &[Arg], open: usize, close: usize) -> Doc {
        let elems = args
            .iter()
            .map(|a| {
                let value = self.expr(&a.value);
                let doc = match &a.name {
                    Some(name) => Doc::Concat(vec![Doc::text(format!("{}: ", name.name)), value]),
                    None => value,
                };
                Elem {
                    start: a.span.start(),
                    end: end(&a.value),
                    doc,
                }
            })
            .collect();
        self.seq(("(", ")"), false, (open, close), elems, Trail::IfBroken)
    }

    /// `{ k: v, .. }`, with `open` and `close` the positions of the braces.
    fn record(&mut self, fields: &[RecordField], open: usize, close: usize) -> Doc {
        let elems = fields
            .iter()
            .map(|f| {
                let value = self.expr(&f.value);
                Elem {
                    start: f.span.start(),
                    end: end(&f.value),
                    doc: Doc::Concat(vec![Doc::text(format!("{}: ", f.name.name)), value]),
                }
            })
            .collect();
        self.seq(("{", "}"), true, (open, close), elems, Trail::IfBroken)
    }

    /// A bracketed, comma-separated list: flat (`f(a, b)`, or `{ a: 1 }` when `pad`) when it
    /// fits and holds no comment, otherwise one element per line with a trailing comma.
    /// `at` holds the positions of the two brackets.
    fn seq(
        &mut self,
        (open, close): (&str, &str),
        pad: bool,
        at: (usize, usize),
        elems: Vec<Elem>,
        trail: Trail,
    ) -> Doc {
        let count = elems.len();
        let mut inner = Vec::new();
        let mut prev = at.0 + 1;
        for (i, elem) in elems.into_iter().enumerate() {
            let comments = self.take(prev, elem.start);
            let mut leading = &comments[..];
            if i > 0 {
                if let Some(c) = comments.first() {
                    if self.same_line(prev, c.start) {
                        inner.push(Doc::LineSuffix(c.text.into()));
                        leading = &comments[1..];
                    }
                }
                inner.push(Doc::Line);
            }
            for c in leading {
                inner.push(Doc::text(c.text));
                inner.push(Doc::HardLine);
            }
            inner.push(elem.doc);
            inner.push(if i + 1 < count {
                Doc::text(",")
            } else {
                match trail {
                    Trail::IfBroken => Doc::if_break(Doc::text(","), Doc::text("")),
                    Trail::Always => Doc::text(","),
                    Trail::Never => Doc::text(""),
                }
            });
            prev = elem.end;
        }
        let comments = self.take(prev, at.1);
        let mut dangling = &comments[..];
        if count > 0 {
            if let Some(c) = comments.first() {
                if self.same_line(prev, c.start) {
                    inner.push(Doc::LineSuffix(c.text.into()));
                    dangling = &comments[1..];
                }
            }
        }
        for (i, c) in dangling.iter().enumerate() {
            // In an empty list, the line break after the bracket comes before the first.
            if count > 0 || i > 0 {
                inner.push(Doc::HardLine);
            }
            inner.push(Doc::text(c.text));
            inner.push(Doc::BreakParent);
        }
        if inner.is_empty() {
            return Doc::text(format!("{open}{close}"));
        }
        let edge = if pad { Doc::Line } else { Doc::SoftLine };
        Doc::group(Doc::Concat(vec![
            Doc::text(open),
            Doc::indent(Doc::Concat(vec![edge.clone(), Doc::Concat(inner)])),
            edge,
            Doc::text(close),
        ]))
    }
}

fn comment_row(blank: bool, c: Comment) -> Row {
    Row {
        blank,
        doc: Doc::text(c.text),
        doc_comment: c.is_doc(),
    }
}

/// Puts comments from inside a statement on their own lines above it: after its leading
/// comments, but above a `///` block that documents it, so the block stays attached.
fn hoist(rows: &mut Vec<Row>, first_leading: usize, hoisted: &[Comment]) {
    let mut at = rows.len() - 1;
    while at > first_leading && rows[at - 1].doc_comment && !rows[at].blank {
        at -= 1;
    }
    let blank = std::mem::replace(&mut rows[at].blank, false);
    let new_rows: Vec<Row> = hoisted
        .iter()
        .enumerate()
        .map(|(i, c)| comment_row(i == 0 && blank, *c))
        .collect();
    let after = at + new_rows.len();
    rows.splice(at..at, new_rows);
    // A moved `///` comment must not become the documentation of the item below it.
    if hoisted.last().is_some_and(Comment::is_doc) {
        rows[after].blank = true;
    }
}

/// `head` (ending in `{`), the rows one level deeper, `}`; `head}` when there are none.
fn braced_block(head: String, rows: Vec<Row>) -> Doc {
    if rows.is_empty() {
        return Doc::text(format!("{head}}}"));
    }
    Doc::Concat(vec![
        Doc::Text(head),
        Doc::indent(Doc::Concat(vec![Doc::HardLine, rows_doc(rows)])),
        Doc::HardLine,
        Doc::text("}"),
    ])
}

/// Rows one per line, with at most one blank line where the source had any.
fn rows_doc(rows: Vec<Row>) -> Doc {
    let mut parts = Vec::new();
    for (i, row) in rows.into_iter().enumerate() {
        if i > 0 {
            parts.push(Doc::HardLine);
            if row.blank {
                parts.push(Doc::HardLine);
            }
        }
        parts.push(row.doc);
    }
    Doc::Concat(parts)
}
