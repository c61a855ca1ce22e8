//! A small pretty-printing document in the style of Wadler's "prettier printer" (as in the
//! JavaScript prettier): a group is laid out flat when it fits in what is left of the line,
//! broken (its line breaks taken) otherwise, outermost groups first.

/// The line width the layout aims for.
pub const WIDTH: usize = 100;

/// Spaces per level of indentation.
pub const INDENT: usize = 4;

#[derive(Clone, Debug)]
pub enum Doc {
    /// Text without newlines.
    Text(String),
    /// A space when flat, a newline when broken.
    Line,
    /// Nothing when flat, a newline when broken.
    SoftLine,
    /// Always a newline; the groups around it cannot be flat.
    HardLine,
    /// Nothing, but the groups around it cannot be flat (a comment that the next line
    /// break must end).
    BreakParent,
    /// One of two documents, depending on whether the enclosing group is broken.
    IfBreak {
        broken: Box<Doc>,
        flat: Box<Doc>,
    },
    /// The newlines inside start one level deeper.
    Indent(Box<Doc>),
    /// Flat if it fits, broken otherwise. `forced`: it holds a hard line break.
    Group {
        doc: Box<Doc>,
        forced: bool,
    },
    Concat(Vec<Doc>),
    /// A `//` comment, kept until the end of the line it is on; the groups around it cannot
    /// be flat, since nothing may follow it on its line.
    LineSuffix(String),
}

impl Doc {
    pub fn text(s: impl Into<String>) -> Doc {
        Doc::Text(s.into())
    }

    pub fn group(doc: Doc) -> Doc {
        let forced = doc.has_hard_break();
        Doc::Group {
            doc: Box::new(doc),
            forced,
        }
    }

    pub fn indent(doc: Doc) -> Doc {
        Doc::Indent(Box::new(doc))
    }

    pub fn if_break(broken: Doc, flat: Doc) -> Doc {
        Doc::IfBreak {
            broken: Box::new(broken),
            flat: Box::new(flat),
        }
    }

    /// Whether the document cannot be laid out on one line. Groups cache the answer, so
    /// building a document bottom-up stays linear.
    fn has_hard_break(&self) -> bool {
        match self {
            Doc::HardLine | Doc::BreakParent | Doc::LineSuffix(_) => true,
            Doc::Group { forced, .. } => *forced,
            Doc::Concat(docs) => docs.iter().any(Doc::has_hard_break),
            Doc::Indent(doc) => doc.has_hard_break(),
            // Only the flat branch can keep a group flat.
            Doc::IfBreak { flat, .. } => flat.has_hard_break(),
            Doc::Text(_) | Doc::Line | Doc::SoftLine => false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Flat,
    Break,
}

fn width(s: &str) -> isize {
    s.chars().count() as isize
}

/// Lays the document out. Lines carry no trailing whitespace.
pub fn render(doc: &Doc) -> String {
    let mut out = String::new();
    let mut column = 0usize;
    let mut suffixes: Vec<&str> = Vec::new();
    // Commands still to lay out, the next one last: (indentation, mode, document).
    let mut stack: Vec<(usize, Mode, &Doc)> = vec![(0, Mode::Break, doc)];
    while let Some((indent, mode, doc)) = stack.pop() {
        match doc {
            Doc::Text(s) => {
                out.push_str(s);
                column += s.chars().count();
            }
            Doc::Concat(docs) => stack.extend(docs.iter().rev().map(|d| (indent, mode, d))),
            Doc::Indent(doc) => stack.push((indent + INDENT, mode, doc)),
            Doc::Group { doc, forced } => {
                let flat = mode == Mode::Flat
                    || (!forced && fits(doc, &stack, WIDTH as isize - column as isize));
                let mode = if flat { Mode::Flat } else { Mode::Break };
                stack.push((indent, mode, doc));
            }
            Doc::Line if mode == Mode::Flat => {
                out.push(' ');
                column += 1;
            }
            Doc::SoftLine if mode == Mode::Flat => {}
            Doc::Line | Doc::SoftLine | Doc::HardLine => {
                newline(&mut out, &mut suffixes, indent);
                column = indent;
            }
            Doc::IfBreak { broken, flat } => {
                let chosen = if mode == Mode::Break { broken } else { flat };
                stack.push((indent, mode, chosen));
            }
            Doc::LineSuffix(s) => suffixes.push(s),
            Doc::BreakParent => {}
        }
    }
    flush_suffixes(&mut out, &mut suffixes);
    trim_line_end(&mut out);
    out
}

fn flush_suffixes(out: &mut String, suffixes: &mut Vec<&str>) {
    for s in suffixes.drain(..) {
        out.push(' ');
        out.push_str(s);
    }
}

fn trim_line_end(out: &mut String) {
    let kept = out.trim_end_matches([' ', '\t']).len();
    out.truncate(kept);
}

fn newline(out: &mut String, suffixes: &mut Vec<&str>, indent: usize) {
    flush_suffixes(out, suffixes);
    trim_line_end(out);
    out.push('\n');
    out.extend(std::iter::repeat_n(' ', indent));
}

/// Whether `next`, laid out flat, and what follows it up to the next possible line break
/// fit in `remaining` columns.
fn fits(next: &Doc, rest: &[(usize, Mode, &Doc)], mut remaining: isize) -> bool {
    let mut todo: Vec<(Mode, &Doc)> = vec![(Mode::Flat, next)];
    let mut rest_index = rest.len();
    loop {
        if remaining < 0 {
            return false;
        }
        let (mode, doc) = match todo.pop() {
            Some(command) => command,
            None => {
                if rest_index == 0 {
                    return true;
                }
                rest_index -= 1;
                let (_, mode, doc) = rest[rest_index];
                (mode, doc)
            }
        };
        match doc {
            Doc::Text(s) => remaining -= width(s),
            Doc::Concat(docs) => todo.extend(docs.iter().rev().map(|d| (mode, d))),
            Doc::Indent(doc) => todo.push((mode, doc)),
            Doc::Group { doc, forced } => {
                todo.push((if *forced { Mode::Break } else { mode }, doc));
            }
            Doc::Line | Doc::SoftLine if mode == Mode::Break => return true,
            Doc::Line => remaining -= 1,
            Doc::SoftLine => {}
            Doc::HardLine => return true,
            Doc::IfBreak { broken, flat } => {
                todo.push((mode, if mode == Mode::Break { broken } else { flat }));
            }
            // Comments do not count: a line is not broken to make room for one.
            Doc::LineSuffix(_) | Doc::BreakParent => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(args: &[&str]) -> Doc {
        let mut inner = vec![Doc::SoftLine];
        for (i, a) in args.iter().enumerate() {
            if i > 0 {
                inner.push(Doc::text(","));
                inner.push(Doc::Line);
            }
            inner.push(Doc::text(*a));
        }
        inner.push(Doc::if_break(Doc::text(","), Doc::text("")));
        Doc::group(Doc::Concat(vec![
            Doc::text("f("),
            Doc::indent(Doc::Concat(inner)),
            Doc::SoftLine,
            Doc::text(")"),
        ]))
    }

    #[test]
    fn a_group_is_flat_when_it_fits() {
        assert_eq!(render(&call(&["a", "b"])), "f(a, b)");
    }

    #[test]
    fn a_group_breaks_when_it_does_not_fit() {
        let long = "x".repeat(60);
        let out = render(&call(&[&long, &long]));
        assert_eq!(out, format!("f(\n    {long},\n    {long},\n)"));
    }

    #[test]
    fn a_comment_forces_a_break_and_ends_its_line() {
        let doc = Doc::group(Doc::Concat(vec![
            Doc::text("a"),
            Doc::LineSuffix("// c".into()),
            Doc::Line,
            Doc::text("b"),
        ]));
        assert_eq!(render(&doc), "a // c\nb");
    }
}
