//! `pexc explain`: every resolved value of an experiment with where it came from: a line of
//! the file, a preset of the standard library, a `with` update, a catalogue default, a
//! phase inheriting from its stage, or a `--set` override.

use pexc_compiler::check::{Checked, Provenance, Val, Value};
use pexc_compiler::source::Origin;
use pexc_stdlib::STAGE_FIELDS;

/// One explained value.
#[derive(Debug, Clone)]
pub struct Entry {
    /// `core.r98.batch`, `vision.depth`.
    pub path: String,
    /// The value in pex syntax.
    pub value: String,
    /// Where it came from.
    pub origin: String,
    /// The `///` doc of a definition or stage.
    pub doc: Option<String>,
}

/// Every value of the root file's definitions and stages, in source order.
pub fn entries(checked: &Checked) -> Vec<Entry> {
    let mut out = Vec::new();
    let root = checked.loaded.root;
    for d in checked.defs.iter().filter(|d| d.file == root) {
        let Some(v) = &d.value else { continue };
        let start = out.len();
        walk(checked, &d.name, v, None, &mut out);
        if let Some(e) = out.get_mut(start) {
            e.doc = d.doc.clone();
        }
    }
    for s in &checked.stages {
        let start = out.len();
        out.push(Entry {
            path: s.name.clone(),
            value: format!(
                "stage{}",
                if s.phases.is_empty() {
                    String::new()
                } else {
                    let names: Vec<&str> = s.phases.iter().map(|p| p.name.as_str()).collect();
                    format!(" (phases {})", names.join(", "))
                }
            ),
            origin: at(checked, root, s.name_span.start()),
            doc: s.doc.clone(),
        });
        let _ = start;
        for f in &s.fields {
            walk(
                checked,
                &format!("{}.{}", s.name, f.name),
                &f.value,
                None,
                &mut out,
            );
        }
        for t in &s.teachers {
            walk(
                checked,
                &format!("{}.teacher.{}", s.name, t.name),
                &t.value,
                None,
                &mut out,
            );
        }
        for e in &s.exports {
            walk(
                checked,
                &format!("{}.export.{}", s.name, e.name),
                &e.value,
                None,
                &mut out,
            );
        }
        for (i, p) in s.phases.iter().enumerate() {
            for schema in STAGE_FIELDS {
                let Some(f) = s.field_in(Some(i), schema.name) else {
                    continue;
                };
                let path = format!("{}.{}.{}", s.name, p.name, schema.name);
                let own = p.fields.iter().any(|x| x.name == schema.name);
                let first = out.len();
                walk(checked, &path, &f.value, None, &mut out);
                if !own {
                    for e in &mut out[first..] {
                        e.origin = format!("inherited from stage `{}`: {}", s.name, e.origin);
                    }
                }
            }
        }
    }
    out
}

/// `file:line` of an offset.
fn at(checked: &Checked, file: pexc_compiler::source::FileId, offset: usize) -> String {
    let f = checked.loaded.sources.get(file);
    let (line, _) = f.line_col(offset);
    format!("{}:{line}", f.name)
}

fn origin(checked: &Checked, v: &Val, ctor: Option<&str>) -> String {
    let f = checked.loaded.sources.get(v.file);
    let place = at(checked, v.file, v.span.start());
    match (v.provenance, &f.origin) {
        (Provenance::Set, _) | (_, Origin::Set(_)) => format!("--set {}", f.text),
        (Provenance::Default, _) => match ctor {
            Some(c) => format!("default of `{c}` (called at {place})"),
            None => format!("default ({place})"),
        },
        (Provenance::With, Origin::Std(_)) => format!("preset, `with` at {place}"),
        (Provenance::With, _) => format!("`with` at {place}"),
        (_, Origin::Std(_)) => format!("preset at {place}"),
        _ => place,
    }
}

fn walk(checked: &Checked, path: &str, v: &Val, ctor: Option<&str>, out: &mut Vec<Entry>) {
    let call = match &v.value {
        Value::Call(c) if !c.args.is_empty() => Some((**c).clone()),
        Value::Model(r) => checked.model_call(r).cloned(),
        _ => None,
    };
    // A call's arguments follow on lines of their own.
    let value = match (&v.value, &call) {
        (Value::Call(c), Some(_)) => format!("{}(..)", c.ctor.name),
        _ => show(v),
    };
    out.push(Entry {
        path: path.into(),
        value,
        origin: origin(checked, v, ctor),
        doc: None,
    });
    if let Some(c) = call {
        for (name, arg) in &c.args {
            walk(
                checked,
                &format!("{path}.{name}"),
                arg,
                Some(c.ctor.name),
                out,
            );
        }
    }
}

/// A value in pex syntax.
pub fn show(v: &Val) -> String {
    match &v.value {
        Value::Int(i) => i.to_string(),
        Value::Float(f) => number(*f),
        Value::Frac(n, d) => format!("{n}/{d}"),
        Value::Str(s) => format!("{s:?}"),
        Value::Bool(b) => b.to_string(),
        Value::List(items) => format!(
            "[{}]",
            items.iter().map(show).collect::<Vec<_>>().join(", ")
        ),
        Value::Tuple(items) => format!(
            "({})",
            items.iter().map(show).collect::<Vec<_>>().join(", ")
        ),
        Value::Record(fields) => format!(
            "{{{}}}",
            fields
                .iter()
                .map(|(n, v)| format!("{n}: {}", show(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Call(c) if c.args.is_empty() && c.ctor.params.is_empty() => c.ctor.name.into(),
        Value::Call(c) => format!(
            "{}({})",
            c.ctor.name,
            c.args
                .iter()
                .map(|(n, v)| format!("{n}: {}", show(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Loss(terms) => terms
            .iter()
            .map(|t| {
                let term = show(&Val::new(
                    Value::Call(std::sync::Arc::new(t.term.clone())),
                    t.file,
                    t.span,
                ));
                if t.weight == 1.0 {
                    term
                } else {
                    format!("{} * {term}", t.weight)
                }
            })
            .collect::<Vec<_>>()
            .join(" + "),
        Value::Model(r) => r.display(),
        Value::Stage(s) => s.clone(),
        Value::StageData { stage, name } => format!("{stage}.{name}"),
        Value::Tap(t) => t.display(),
        Value::Teacher(t) => t.clone(),
        Value::Invalid => "<invalid>".into(),
    }
}

/// A float as people write it: `0.05`, `2e-3`, `1e-8`.
fn number(f: f64) -> String {
    if f != 0.0 && (f.abs() < 1e-3 || f.abs() >= 1e7) {
        format!("{f:e}")
    } else {
        format!("{f}")
    }
}

/// Entries as aligned text: `path = value    origin`.
pub fn render(entries: &[&Entry]) -> String {
    let left: Vec<String> = entries
        .iter()
        .map(|e| format!("{} = {}", e.path, e.value))
        .collect();
    let width = left
        .iter()
        .map(|l| l.chars().count())
        .filter(|&n| n <= 64)
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (e, l) in entries.iter().zip(&left) {
        if let Some(doc) = &e.doc {
            for line in doc.lines() {
                out.push_str(&format!("/// {line}\n"));
            }
        }
        let pad = width.saturating_sub(l.chars().count());
        out.push_str(&format!("{l}{}   # {}\n", " ".repeat(pad), e.origin));
    }
    out
}
