//! `--set path=value` overrides. Each override is a one-line source file of its own, so
//! that its value is parsed with the language's own syntax and every diagnostic about it
//! points into it. The checker applies an override where the value it replaces is
//! evaluated (a definition, a stage or phase field, or an argument inside either), then
//! checks the result like source: types, constraints, and every stage check after it.

use pexc_stdlib::{stage_field, Constraint, Kind, Ty, STAGE_FIELDS, UNITS};

use super::eval::refresh_defaults;
use super::suggest;
use super::value::*;
use super::{CheckedPhase, Checker, Cx, FieldVal};
use crate::diagnostic::Error;
use crate::source::{FileId, Span};
use crate::syntax::ast::{DefKind, Expr};
use crate::syntax::parse::parse_expression;

/// One parsed `--set`.
#[derive(Debug, Clone)]
pub struct Override {
    /// The override's own source file: its text is `path=value`.
    pub file: FileId,
    /// The dotted path, each name with its span.
    pub path: Vec<(String, Span)>,
    pub value: Expr,
}

impl Override {
    /// Parses `path=value` held in `file`. Spans are offsets in `text`.
    pub fn parse(file: FileId, text: &str) -> Result<Override, Box<Error>> {
        let malformed = |span: Span, why: &str| {
            Box::new(Error::SetMalformed {
                text: text.into(),
                span: span.into(),
                why: why.into(),
            })
        };
        let Some(eq) = text.find('=') else {
            return Err(malformed(Span::new(0, text.len()), "no `=`"));
        };
        let mut path = Vec::new();
        let mut start = 0;
        for part in text[..eq].split('.') {
            let trimmed = part.trim();
            let lead = part.len() - part.trim_start().len();
            let span = Span::new(start + lead, start + lead + trimmed.len());
            let ok = trimmed
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && trimmed
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                let span = if trimmed.is_empty() {
                    Span::new(start, start + part.len())
                } else {
                    span
                };
                return Err(malformed(span, "not a name"));
            }
            path.push((trimmed.to_string(), span));
            start += part.len() + 1;
        }
        // The path is blanked out, so the value's spans are offsets in the whole text.
        let blanked = format!("{}{}", " ".repeat(eq + 1), &text[eq + 1..]);
        let value = parse_expression(&blanked)?;
        Ok(Override { file, path, value })
    }

    /// The path as written: `core.r98.samples`.
    pub fn dotted(&self) -> String {
        let names: Vec<&str> = self.path.iter().map(|(n, _)| n.as_str()).collect();
        names.join(".")
    }

    fn span_of(&self, depth: usize) -> Span {
        self.path[depth].1
    }
}

impl Checker<'_> {
    /// Applies the overrides of definition `id` (by the name the root file knows it by) to
    /// its freshly evaluated value.
    pub(super) fn apply_def_overrides(&mut self, id: DefId, mut value: Val) -> Val {
        for i in 0..self.overrides.len() {
            if self.override_done[i] {
                continue;
            }
            let name = self.overrides[i].path[0].0.clone();
            if self.root_def(&name) != Some(id) || self.stage_index.contains_key(&name) {
                continue;
            }
            self.override_done[i] = true;
            let o = self.overrides[i].clone();
            let ty = match self.defs[id.0].kind {
                DefKind::Model => Some(Ty::Of(Kind::Model)),
                DefKind::Data => Some(Ty::Of(Kind::Data)),
                DefKind::Let => None,
            };
            let cx = Cx {
                file: o.file,
                stage: None,
                teachers: None,
            };
            value = self.set_in(cx, &o, 1, value, ty.as_ref(), Constraint::None);
        }
        value
    }

    /// Applies the overrides of stage `name` to its fields and phases, before the stage's
    /// cross-field checks.
    pub(super) fn apply_stage_overrides(
        &mut self,
        cx: Cx,
        name: &str,
        name_span: Span,
        fields: &mut Vec<FieldVal>,
        phases: &mut [CheckedPhase],
    ) {
        for i in 0..self.overrides.len() {
            if self.override_done[i] || self.overrides[i].path[0].0 != name {
                continue;
            }
            self.override_done[i] = true;
            let o = self.overrides[i].clone();
            let cx = Cx { file: o.file, ..cx };
            let Some((first, first_span)) = o.path.get(1).cloned() else {
                self.unknown_path(
                    &o,
                    0,
                    format!("`{name}` is a stage; set one of its fields"),
                    field_names(),
                );
                continue;
            };
            let (block, depth, block_span) = if stage_field(&first).is_some() {
                (fields as &mut Vec<FieldVal>, 1, name_span)
            } else if let Some(p) = phases.iter_mut().find(|p| p.name == first) {
                let span = p.span;
                (&mut p.fields, 2, span)
            } else {
                let mut names = field_names();
                names.extend(phases.iter().map(|p| p.name.clone()));
                self.unknown_path(
                    &o,
                    1,
                    format!("stage `{name}` has no field or phase `{first}`"),
                    names,
                );
                continue;
            };
            let Some((field, field_span)) = o.path.get(depth).cloned() else {
                self.unknown_path(
                    &o,
                    1,
                    format!("`{first}` is a phase; set one of its fields"),
                    field_names(),
                );
                continue;
            };
            let Some(schema) = stage_field(&field) else {
                self.unknown_path(
                    &o,
                    depth,
                    format!("there is no stage field `{field}`"),
                    field_names(),
                );
                continue;
            };
            if depth == 2 && !schema.in_phase {
                self.err(
                    o.file,
                    Error::StageOnlyField {
                        name: field.clone(),
                        span: field_span.into(),
                    },
                );
                continue;
            }
            let _ = first_span;
            let existing = block.iter().position(|f| f.name == schema.name);
            if depth + 1 < o.path.len() && existing.is_none() {
                self.unknown_path(
                    &o,
                    depth,
                    format!("`{field}` is not set there, so it has no arguments to change"),
                    Vec::new(),
                );
                continue;
            }
            let current = existing
                .map(|i| block[i].value.clone())
                .unwrap_or_else(|| Val::invalid(o.file, field_span));
            let v = self.set_in(
                cx,
                &o,
                depth + 1,
                current,
                Some(&schema.ty),
                schema.constraint,
            );
            match existing {
                Some(i) => block[i].value = v,
                None => {
                    // A new unit of work replaces the block's other one.
                    if UNITS.contains(&schema.name) {
                        block.retain(|f| !UNITS.contains(&f.name));
                    }
                    block.push(FieldVal {
                        name: schema.name,
                        name_span: block_span,
                        value: v,
                    });
                }
            }
        }
    }

    /// Reports every override that named nothing.
    pub(super) fn report_unapplied_overrides(&mut self) {
        for i in 0..self.overrides.len() {
            if self.override_done[i] {
                continue;
            }
            let o = self.overrides[i].clone();
            let mut names: Vec<String> = self.stage_syn.iter().map(|s| s.name.clone()).collect();
            if let Some(scope) = self.scopes.get(&self.loaded.root) {
                names.extend(scope.keys().cloned());
            }
            self.unknown_path(
                &o,
                0,
                format!("no definition or stage is named `{}`", o.path[0].0),
                names,
            );
        }
    }

    /// Sets the value at `o.path[depth..]` inside `target`.
    fn set_in(
        &mut self,
        cx: Cx,
        o: &Override,
        depth: usize,
        target: Val,
        ty: Option<&Ty>,
        constraint: Constraint,
    ) -> Val {
        if depth >= o.path.len() {
            let v = match ty {
                Some(t) => self.eval_as(cx, &o.value, t),
                None => self.eval(cx, &o.value, None),
            };
            let what = o.dotted();
            if !self.constrain(cx, &v, constraint, || format!("`{what}`")) {
                // Reported; later checks stay quiet about it.
                return Val::invalid(v.file, v.span);
            }
            return Val {
                provenance: Provenance::Set,
                ..v
            };
        }
        let (name, _) = o.path[depth].clone();
        let call = match &target.value {
            Value::Invalid => return target,
            Value::Record(fields) => {
                let mut fields = fields.clone();
                let Some(slot) = fields.iter().position(|(n, _)| *n == name) else {
                    let names = fields.iter().map(|(n, _)| n.clone()).collect();
                    self.unknown_path(o, depth, format!("the record has no field `{name}`"), names);
                    return target;
                };
                let inner = fields[slot].1.clone();
                fields[slot].1 = self.set_in(cx, o, depth + 1, inner, None, Constraint::None);
                return Val {
                    value: Value::Record(fields),
                    ..target
                };
            }
            Value::Call(c) => (**c).clone(),
            Value::Model(_) => match self.model_call(&target) {
                Some(c) => std::sync::Arc::unwrap_or_clone(c),
                None => return target,
            },
            other => {
                let prefix = o.path[..depth]
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(".");
                let what = format!("`{prefix}` is {}, which has no `{name}`", other.described());
                self.unknown_path(o, depth, what, Vec::new());
                return target;
            }
        };
        let mut call = call;
        let ctor = call.ctor;
        let Some(param) = ctor.param(&name) else {
            let names = ctor.params.iter().map(|p| p.name.to_string()).collect();
            self.unknown_path(
                o,
                depth,
                format!("`{}` has no argument `{name}`", ctor.name),
                names,
            );
            return target;
        };
        let current = call.arg(param.name).cloned();
        if depth + 1 < o.path.len() && current.is_none() {
            self.unknown_path(
                o,
                depth,
                format!(
                    "`{name}` of `{}` is not set, so it has nothing to change",
                    ctor.name
                ),
                Vec::new(),
            );
            return target;
        }
        let current = current.unwrap_or_else(|| Val::invalid(o.file, o.span_of(depth)));
        let v = self.set_in(cx, o, depth + 1, current, Some(&param.ty), param.constraint);
        match call.args.iter_mut().find(|(n, _)| *n == param.name) {
            Some(slot) => slot.1 = v,
            None => call.args.push((param.name, v)),
        }
        let home = Cx {
            file: target.file,
            ..cx
        };
        refresh_defaults(&mut call, home, target.span);
        Val {
            value: Value::Call(std::sync::Arc::new(call)),
            ..target
        }
    }

    fn unknown_path(&mut self, o: &Override, depth: usize, what: String, candidates: Vec<String>) {
        let (name, span) = o.path[depth].clone();
        let help = suggest::did_you_mean(&name, candidates.iter().map(String::as_str));
        self.err(
            o.file,
            Error::SetUnknownPath {
                path: o.dotted(),
                what,
                span: span.into(),
                label: "unknown here".into(),
                help,
            },
        );
    }
}

fn field_names() -> Vec<String> {
    STAGE_FIELDS.iter().map(|f| f.name.to_string()).collect()
}
