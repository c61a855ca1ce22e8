//! Typed evaluation of expressions: names, constructor calls against the catalogue,
//! `with` updates, taps, arithmetic and loss sums. Expectations flow down (a bare `cls`
//! means the pooling where a pooling is expected); types are checked on the way up.

use std::sync::Arc;

use pexc_stdlib::{
    constructor, Constraint, Constructor, DefaultValue, Kind, Param, Tag, Ty, CONSTRUCTORS,
};

use super::suggest;
use super::value::*;
use super::{list_names, Checker, Cx, DefState, Entry, Produced};
use crate::diagnostic::Error;
use crate::source::Span;
use crate::syntax::ast::{Arg, BinOp, DefKind, Expr, ExprKind, RecordField};

impl Checker<'_> {
    /// The value of a definition, evaluated once; a definition that reaches itself is a
    /// cycle.
    pub(super) fn ensure_def(&mut self, id: DefId) -> Val {
        if let Some(cycle) = self.visit_def(id) {
            return cycle;
        }
        self.defs[id.0]
            .value
            .clone()
            .unwrap_or_else(|| Val::invalid(self.defs[id.0].file, Span::default()))
    }

    /// Evaluates a definition unless it is done; `Some(invalid)` where it reaches itself.
    pub(super) fn visit_def(&mut self, id: DefId) -> Option<Val> {
        match self.def_state[id.0] {
            DefState::Done => return None,
            DefState::InProgress => {
                let d = &self.defs[id.0];
                let (file, name, span) = (d.file, d.name.clone(), d.name_span);
                let start = self.def_stack.iter().position(|x| *x == id).unwrap_or(0);
                let mut path: Vec<String> = self.def_stack[start..]
                    .iter()
                    .map(|x| self.defs[x.0].name.clone())
                    .collect();
                path.push(name.clone());
                let cycle = path.join(" -> ");
                self.err(
                    file,
                    Error::DefinitionCycle {
                        name,
                        cycle,
                        span: span.into(),
                    },
                );
                return Some(Val::invalid(file, span));
            }
            DefState::Unvisited => {}
        }
        self.def_state[id.0] = DefState::InProgress;
        self.def_stack.push(id);
        let file = self.defs[id.0].file;
        let expr = self.def_exprs[id.0];
        let cx = Cx {
            file,
            stage: None,
            teachers: None,
        };
        let value = match self.defs[id.0].kind {
            DefKind::Model => self.eval_as(cx, expr, &Ty::Of(Kind::Model)),
            DefKind::Data => self.eval_as(cx, expr, &Ty::Of(Kind::Data)),
            DefKind::Let => self.eval(cx, expr, None),
        };
        let value = if self.overrides.is_empty() {
            value
        } else {
            self.apply_def_overrides(id, value)
        };
        // A cycle may have marked this definition invalid meanwhile; keep the first verdict.
        self.def_stack.pop();
        self.def_state[id.0] = DefState::Done;
        self.defs[id.0].value = Some(value);
        None
    }

    /// Evaluates and checks against `ty`.
    pub(super) fn eval_as(&mut self, cx: Cx, e: &Expr, ty: &Ty) -> Val {
        let v = self.eval(cx, e, Some(ty));
        self.conform(cx, v, ty)
    }

    pub(super) fn eval(&mut self, cx: Cx, e: &Expr, expect: Option<&Ty>) -> Val {
        let here = |v: Value| Val::new(v, cx.file, e.span);
        match &e.kind {
            ExprKind::Int(i) => here(Value::Int(*i)),
            ExprKind::Float(f) => here(Value::Float(*f)),
            ExprKind::Overflow => {
                self.err(
                    cx.file,
                    Error::NumberTooLarge {
                        span: e.span.into(),
                    },
                );
                here(Value::Invalid)
            }
            ExprKind::Str(s) => here(Value::Str(s.clone())),
            ExprKind::Bool(b) => here(Value::Bool(*b)),
            ExprKind::Name(n) => self.eval_name(cx, n, e.span, expect),
            ExprKind::Call { callee, args } => {
                if let Some(entry) = self.lookup(cx, &callee.name) {
                    let what = match entry {
                        Entry::Def(d) => {
                            self.def_used[d.0] = true;
                            format!("a {}", self.defs[d.0].kind.keyword())
                        }
                        Entry::Import(i) => {
                            self.imports[i].used = true;
                            "an imported definition".into()
                        }
                    };
                    let help = Some(format!(
                        "to change a definition, update it: `{} with {{ field: value }}`",
                        callee.name
                    ));
                    self.err(
                        cx.file,
                        Error::NotConstructor {
                            name: callee.name.clone(),
                            what,
                            span: callee.span.into(),
                            help,
                        },
                    );
                    return here(Value::Invalid);
                }
                match constructor(&callee.name) {
                    Some(ctor) => self.eval_call(cx, ctor, args, e.span, callee.span),
                    None => {
                        let names = CONSTRUCTORS.iter().map(|c| c.name);
                        let help = suggest::did_you_mean(&callee.name, names).or_else(|| {
                            Some(
                                "`pexc explain` lists the constructors of the standard library"
                                    .into(),
                            )
                        });
                        self.err(
                            cx.file,
                            Error::UnknownName {
                                name: callee.name.clone(),
                                span: callee.span.into(),
                                help,
                            },
                        );
                        here(Value::Invalid)
                    }
                }
            }
            ExprKind::List(items) => {
                let elem = match expect {
                    Some(Ty::List(t)) => Some(*t),
                    _ => None,
                };
                let vals = items.iter().map(|i| self.eval(cx, i, elem)).collect();
                here(Value::List(vals))
            }
            ExprKind::Tuple(items) => {
                let tys: &[Ty] = match expect {
                    Some(Ty::Tuple(ts)) => ts,
                    _ => &[],
                };
                let vals = items
                    .iter()
                    .enumerate()
                    .map(|(i, x)| self.eval(cx, x, tys.get(i)))
                    .collect();
                here(Value::Tuple(vals))
            }
            ExprKind::Paren(inner) => {
                let v = self.eval(cx, inner, expect);
                Val { span: e.span, ..v }
            }
            ExprKind::Record(fields) => {
                let mut out: Vec<(String, Val)> = Vec::new();
                for f in fields {
                    if let Some((_, prev)) = out.iter().find(|(n, _)| *n == f.name.name) {
                        let first = prev.span;
                        self.err(
                            cx.file,
                            Error::DuplicateArg {
                                name: f.name.name.clone(),
                                span: f.name.span.into(),
                                first: first.into(),
                            },
                        );
                        continue;
                    }
                    let v = self.eval(cx, &f.value, None);
                    out.push((f.name.name.clone(), v));
                }
                here(Value::Record(out))
            }
            ExprKind::Member { base, name, args } => {
                self.eval_member(cx, base, &name.name, name.span, args.as_deref(), e.span)
            }
            ExprKind::With { base, fields } => self.eval_with(cx, base, fields, e.span, expect),
            ExprKind::Binary { op, lhs, rhs } => {
                let l = self.eval(cx, lhs, None);
                let r = self.eval(cx, rhs, None);
                self.binary(cx, *op, l, r, e.span)
            }
            ExprKind::Neg(inner) => {
                let v = self.eval(cx, inner, expect);
                let negated = match v.value {
                    Value::Int(i) => i.checked_neg().map(Value::Int),
                    Value::Float(f) => Some(Value::Float(-f)),
                    Value::Frac(n, d) => n.checked_neg().map(|n| Value::Frac(n, d)),
                    Value::Invalid => Some(Value::Invalid),
                    _ => None,
                };
                match negated {
                    Some(n) => here(n),
                    None => {
                        let found = v.value.described();
                        self.err(
                            cx.file,
                            Error::TypeMismatch {
                                expected: "a number after `-`".into(),
                                found,
                                span: inner.span.into(),
                                help: None,
                            },
                        );
                        here(Value::Invalid)
                    }
                }
            }
        }
    }

    /// What `name` means in the current module (teachers aside).
    fn lookup(&self, cx: Cx, name: &str) -> Option<Entry> {
        self.scopes.get(&cx.file).and_then(|s| s.get(name)).copied()
    }

    fn eval_name(&mut self, cx: Cx, name: &str, span: Span, expect: Option<&Ty>) -> Val {
        let here = |v: Value| Val::new(v, cx.file, span);
        // A bare variant of the expected kind wins: `pool: none`, `pos: [rope2d, abs]`.
        let expected_kind = match expect {
            Some(Ty::Of(k)) => Some(*k),
            Some(Ty::List(Ty::Of(k))) => Some(*k),
            _ => None,
        };
        if let Some(kind) = expected_kind {
            if let Some(ctor) = CONSTRUCTORS
                .iter()
                .find(|c| c.name == name && c.kind == kind && c.has_tag(Tag::Bare))
            {
                return here(Value::Call(Arc::new(CallValue {
                    ctor,
                    args: Vec::new(),
                })));
            }
        }
        if let Some(t) = cx.teachers {
            if t.contains_key(name) {
                return here(Value::Teacher(name.to_string()));
            }
        }
        let def = match self.lookup(cx, name) {
            Some(Entry::Def(d)) => Some(d),
            Some(Entry::Import(i)) => {
                self.imports[i].used = true;
                match self.imports[i].target {
                    Some(d) => Some(d),
                    None => return here(Value::Invalid),
                }
            }
            None => None,
        };
        if let Some(d) = def {
            return self.def_ref(d, cx, span);
        }
        if cx.file == self.loaded.root {
            if let Some(&i) = self.stage_index.get(name) {
                if let Some(from) = cx.stage {
                    self.edges.push((from, i, span));
                }
                return here(Value::Stage(name.to_string()));
            }
        }
        if let Some(&d) = self.prelude.get(name) {
            return self.def_ref(d, cx, span);
        }
        if let Some(ctor) = CONSTRUCTORS
            .iter()
            .find(|c| c.name == name && c.has_tag(Tag::Bare))
        {
            return here(Value::Call(Arc::new(CallValue {
                ctor,
                args: Vec::new(),
            })));
        }
        let help = if let Some(ctor) = constructor(name) {
            Some(format!(
                "`{name}` is a constructor: call it, `{}`",
                ctor.signature()
            ))
        } else {
            let candidates = self.names_in_scope(cx, expected_kind);
            let refs: Vec<&str> = candidates.iter().map(String::as_str).collect();
            suggest::did_you_mean(name, refs.iter().copied())
        };
        self.err(
            cx.file,
            Error::UnknownName {
                name: name.to_string(),
                span: span.into(),
                help,
            },
        );
        here(Value::Invalid)
    }

    /// Every name visible at `cx`, for "did you mean".
    fn names_in_scope(&self, cx: Cx, kind: Option<Kind>) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        if let Some(s) = self.scopes.get(&cx.file) {
            out.extend(s.keys().cloned());
        }
        if cx.file == self.loaded.root {
            out.extend(self.stage_syn.iter().map(|s| s.name.clone()));
        }
        if let Some(t) = cx.teachers {
            out.extend(t.keys().cloned());
        }
        out.extend(self.prelude.keys().cloned());
        out.extend(
            CONSTRUCTORS
                .iter()
                .filter(|c| c.has_tag(Tag::Bare) && kind.is_none_or(|k| c.kind == k))
                .map(|c| c.name.to_string()),
        );
        out.sort();
        out
    }

    /// A use of a definition: models by identity, everything else by value.
    fn def_ref(&mut self, d: DefId, cx: Cx, span: Span) -> Val {
        self.def_used[d.0] = true;
        if self.defs[d.0].kind == DefKind::Model {
            // Models are used by identity: evaluate (once) for its diagnostics, no copy.
            self.visit_def(d);
            return Val::new(
                Value::Model(ModelRef::Def(d, self.defs[d.0].name.clone())),
                cx.file,
                span,
            );
        }
        let value = self.ensure_def(d);
        Val {
            file: cx.file,
            span,
            ..value
        }
    }

    /// Follows model references to the constructor call that declares the model.
    pub(super) fn model_call(&self, v: &Val) -> Option<Arc<CallValue>> {
        match &v.value {
            Value::Call(c) if c.ctor.kind == Kind::Model => Some(c.clone()),
            Value::Model(r) => super::model_call(&self.defs, r).cloned(),
            _ => None,
        }
    }

    fn eval_call(
        &mut self,
        cx: Cx,
        ctor: &'static Constructor,
        args: &[Arg],
        span: Span,
        callee_span: Span,
    ) -> Val {
        let mut given: Vec<(&'static Param, Val, Span)> = Vec::new();
        let mut ok = true;
        // A misspelt or positional argument is most likely one of the missing ones: do not
        // report those as missing too.
        let mut meant: Vec<&str> = Vec::new();
        let mut positional_error = false;
        for (i, arg) in args.iter().enumerate() {
            let param = match &arg.name {
                Some(n) => match ctor.param(&n.name) {
                    Some(p) => p,
                    None => {
                        let help = unknown_arg_help(ctor, &n.name);
                        meant.extend(suggest::closest(
                            &n.name,
                            ctor.params.iter().map(|p| p.name),
                        ));
                        self.err(
                            cx.file,
                            Error::UnknownArg {
                                ctor: ctor.name.into(),
                                name: n.name.clone(),
                                span: n.span.into(),
                                help,
                            },
                        );
                        ok = false;
                        continue;
                    }
                },
                None => match ctor.positional() {
                    Some(p) if i == 0 => p,
                    _ => {
                        let help = if ctor.params.is_empty() {
                            Some(format!(
                                "`{}` takes no arguments: `{}()`",
                                ctor.name, ctor.name
                            ))
                        } else {
                            Some(format!(
                                "write `name: value`; `{}` takes {}",
                                ctor.name,
                                ctor.signature()
                            ))
                        };
                        self.err(
                            cx.file,
                            Error::Positional {
                                ctor: ctor.name.into(),
                                span: arg.span.into(),
                                help,
                            },
                        );
                        positional_error = true;
                        ok = false;
                        continue;
                    }
                },
            };
            let name_span = arg.name.as_ref().map_or(arg.value.span, |n| n.span);
            if let Some((_, _, first)) = given.iter().find(|(p, _, _)| p.name == param.name) {
                self.err(
                    cx.file,
                    Error::DuplicateArg {
                        name: param.name.into(),
                        span: name_span.into(),
                        first: (*first).into(),
                    },
                );
                ok = false;
                continue;
            }
            let v = self.eval_as(cx, &arg.value, &param.ty);
            self.constrain(cx, &v, param.constraint, || {
                format!("`{}` of `{}`", param.name, ctor.name)
            });
            given.push((param, v, name_span));
        }
        let missing: Vec<&str> = ctor
            .params
            .iter()
            .filter(|p| {
                p.default == DefaultValue::Required
                    && !given.iter().any(|(g, _, _)| g.name == p.name)
            })
            .map(|p| p.name)
            .filter(|p| !meant.contains(p))
            .collect();
        if !missing.is_empty() && !positional_error {
            let names = if missing.len() == 1 {
                format!("argument `{}`", missing[0])
            } else {
                format!(
                    "arguments {}",
                    missing
                        .iter()
                        .map(|m| format!("`{m}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            let docs: Vec<String> = missing
                .iter()
                .filter_map(|m| ctor.param(m))
                .map(|p| format!("`{}`: {} ({})", p.name, p.ty.described(), p.doc))
                .collect();
            let help = Some(format!(
                "{} takes {}; add {}",
                ctor.name,
                ctor.signature(),
                docs.join("; ")
            ));
            self.err(
                cx.file,
                Error::MissingArg {
                    ctor: ctor.name.into(),
                    names,
                    span: callee_span.into(),
                    help,
                },
            );
            ok = false;
        }
        if !ok {
            return Val::invalid(cx.file, span);
        }
        let mut call = CallValue {
            ctor,
            args: Vec::new(),
        };
        for p in ctor.params {
            if let Some((_, v, _)) = given.iter().find(|(g, _, _)| g.name == p.name) {
                call.args.push((p.name, v.clone()));
            }
        }
        fill_defaults(&mut call, cx, span);
        Val::new(Value::Call(Arc::new(call)), cx.file, span)
    }

    fn eval_with(
        &mut self,
        cx: Cx,
        base: &Expr,
        fields: &[RecordField],
        span: Span,
        expect: Option<&Ty>,
    ) -> Val {
        let b = self.eval(cx, base, expect);
        let call = match &b.value {
            Value::Invalid => return Val::invalid(cx.file, span),
            Value::Call(c) => Some((**c).clone()),
            Value::Model(_) => self.model_call(&b).map(Arc::unwrap_or_clone),
            Value::Record(fs) => {
                let mut out = fs.clone();
                for f in fields {
                    let v = self.eval(cx, &f.value, None);
                    match out.iter_mut().find(|(n, _)| *n == f.name.name) {
                        Some(slot) => slot.1 = v,
                        None => {
                            let names: Vec<&str> = fs.iter().map(|(n, _)| n.as_str()).collect();
                            let help = suggest::did_you_mean(&f.name.name, names.iter().copied())
                                .or_else(|| Some(format!("the record has {}", list_names(&names))));
                            self.err(
                                cx.file,
                                Error::UnknownArg {
                                    ctor: "the record".into(),
                                    name: f.name.name.clone(),
                                    span: f.name.span.into(),
                                    help,
                                },
                            );
                        }
                    }
                }
                return Val::new(Value::Record(out), cx.file, span);
            }
            _ => None,
        };
        let Some(mut call) = call else {
            let found = b.value.described();
            self.err(
                cx.file,
                Error::TypeMismatch {
                    expected: "a record, a model or a constructor call before `with`".into(),
                    found,
                    span: base.span.into(),
                    help: Some(
                        "`with { .. }` copies a record-like value and changes the named fields"
                            .into(),
                    ),
                },
            );
            return Val::invalid(cx.file, span);
        };
        let ctor = call.ctor;
        let mut seen: Vec<(&str, Span)> = Vec::new();
        for f in fields {
            let Some(param) = ctor.param(&f.name.name) else {
                let help = unknown_arg_help(ctor, &f.name.name);
                self.err(
                    cx.file,
                    Error::UnknownArg {
                        ctor: ctor.name.into(),
                        name: f.name.name.clone(),
                        span: f.name.span.into(),
                        help,
                    },
                );
                continue;
            };
            if let Some((_, first)) = seen.iter().find(|(n, _)| *n == param.name) {
                self.err(
                    cx.file,
                    Error::DuplicateArg {
                        name: param.name.into(),
                        span: f.name.span.into(),
                        first: (*first).into(),
                    },
                );
                continue;
            }
            seen.push((param.name, f.name.span));
            let mut v = self.eval_as(cx, &f.value, &param.ty);
            v.provenance = Provenance::With;
            self.constrain(cx, &v, param.constraint, || {
                format!("`{}` of `{}`", param.name, ctor.name)
            });
            match call.args.iter_mut().find(|(n, _)| *n == param.name) {
                Some(slot) => slot.1 = v,
                None => call.args.push((param.name, v)),
            }
        }
        refresh_defaults(&mut call, cx, span);
        Val::new(Value::Call(Arc::new(call)), cx.file, span)
    }

    fn eval_member(
        &mut self,
        cx: Cx,
        base: &Expr,
        name: &str,
        name_span: Span,
        args: Option<&[Arg]>,
        span: Span,
    ) -> Val {
        let b = self.eval(cx, base, None);
        let invalid = Val::invalid(cx.file, span);
        match &b.value {
            Value::Invalid => invalid,
            Value::Stage(stage) => {
                let Some(syn) = self
                    .stage_index
                    .get(stage.as_str())
                    .map(|&i| &self.stage_syn[i])
                else {
                    return invalid;
                };
                if args.is_some() {
                    self.err(cx.file, Error::UnknownMember {
                        name: stage.clone(),
                        member: name.into(),
                        span: name_span.into(),
                        help: Some(format!("a stage's members are the models it trains and its exports: `{stage}.vision`")),
                    });
                    return invalid;
                }
                match syn.produces.iter().find(|(n, _)| n == name) {
                    Some((_, Produced::Data)) => Val::new(
                        Value::StageData {
                            stage: stage.clone(),
                            name: name.into(),
                        },
                        cx.file,
                        span,
                    ),
                    Some((_, Produced::Model(target))) => {
                        let def = target.as_ref().and_then(|t| {
                            match self.lookup(
                                Cx {
                                    file: self.loaded.root,
                                    ..cx
                                },
                                t,
                            ) {
                                Some(Entry::Def(d)) => Some(d),
                                Some(Entry::Import(i)) => self.imports[i].target,
                                None => self.prelude.get(t).copied(),
                            }
                        });
                        Val::new(
                            Value::Model(ModelRef::StageOutput {
                                stage: stage.clone(),
                                name: name.into(),
                                def,
                            }),
                            cx.file,
                            span,
                        )
                    }
                    None => {
                        let names: Vec<&str> =
                            syn.produces.iter().map(|(n, _)| n.as_str()).collect();
                        let help = match (
                            suggest::closest(name, names.iter().copied()),
                            names.is_empty(),
                        ) {
                            (Some(c), _) => Some(format!(
                                "did you mean `{stage}.{c}`? `{stage}` produces {}",
                                list_names(&names)
                            )),
                            (None, true) => Some(format!("`{stage}` trains and exports nothing")),
                            (None, false) => {
                                Some(format!("`{stage}` produces {}", list_names(&names)))
                            }
                        };
                        self.err(
                            cx.file,
                            Error::NotProduced {
                                stage: stage.clone(),
                                name: name.into(),
                                span: name_span.into(),
                                help,
                            },
                        );
                        invalid
                    }
                }
            }
            Value::Record(fields) if args.is_none() => match fields.iter().find(|(n, _)| n == name)
            {
                Some((_, v)) => Val { span, ..v.clone() },
                None => {
                    let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
                    let help = suggest::did_you_mean(name, names.iter().copied());
                    self.err(
                        cx.file,
                        Error::UnknownMember {
                            name: "the record".into(),
                            member: name.into(),
                            span: name_span.into(),
                            help,
                        },
                    );
                    invalid
                }
            },
            Value::Model(_) | Value::Call(_) | Value::Teacher(_) => {
                self.eval_tap(cx, &b, base, name, name_span, args, span)
            }
            other => {
                let found = other.described();
                self.err(cx.file, Error::UnknownMember {
                    name: found,
                    member: name.into(),
                    span: name_span.into(),
                    help: Some("members exist on stages (`core.vision`), models (`vision.last`, `vision.layer(k)`) and records".into()),
                });
                invalid
            }
        }
    }

    /// `.last` or `.layer(k)` on a model, a frozen model, or a teacher.
    #[allow(clippy::too_many_arguments)]
    fn eval_tap(
        &mut self,
        cx: Cx,
        b: &Val,
        base: &Expr,
        name: &str,
        name_span: Span,
        args: Option<&[Arg]>,
        span: Span,
    ) -> Val {
        let invalid = Val::invalid(cx.file, span);
        let (model, frozen) = match &b.value {
            Value::Model(r) => (r.clone(), false),
            Value::Call(c) if c.ctor.name == "frozen" => match c.arg("model").map(|v| &v.value) {
                Some(Value::Model(r)) => (r.clone(), true),
                Some(Value::Stage(s)) => {
                    self.err(cx.file, Error::UnknownMember {
                        name: format!("frozen({s})"),
                        member: name.into(),
                        span: name_span.into(),
                        help: Some(format!("a frozen stage stands for all its models; tap one of them: `frozen({s}.vision).layer(k)`")),
                    });
                    return invalid;
                }
                _ => return invalid,
            },
            other => {
                let what = other.described();
                let help = match other {
                    Value::Teacher(t) => Some(format!("declare the tap on the teacher itself: `teacher {t} = frozen(stage.model).layer(k)`")),
                    Value::Call(_) => Some("taps exist on models: `vision.last`, `vision.layer(k)`".into()),
                    _ => None,
                };
                self.err(
                    cx.file,
                    Error::UnknownMember {
                        name: what,
                        member: name.into(),
                        span: name_span.into(),
                        help,
                    },
                );
                return invalid;
            }
        };
        let layer = match (name, args) {
            ("last", None) => Layer::Last,
            ("layer", Some([arg])) if arg.name.as_ref().is_none_or(|n| n.name == "k") => {
                let k = self.eval_as(cx, &arg.value, &Ty::Int);
                match k.as_int() {
                    Some(k) => Layer::Index(k),
                    None => return invalid,
                }
            }
            ("layer", _) => {
                self.err(
                    cx.file,
                    Error::TypeMismatch {
                        expected: "one block number".into(),
                        found: format!("{} arguments", args.map_or(0, |a| a.len())),
                        span: name_span.into(),
                        help: Some(
                            "write `.layer(k)`: k from 1 (the first block), negative from the end"
                                .into(),
                        ),
                    },
                );
                return invalid;
            }
            _ => {
                let help = suggest::did_you_mean(name, ["last", "layer"])
                    .map(|d| format!("{d} models have `.last` and `.layer(k)`"))
                    .or_else(|| Some("models have `.last` and `.layer(k)`".into()));
                self.err(
                    cx.file,
                    Error::UnknownMember {
                        name: model.display(),
                        member: name.into(),
                        span: name_span.into(),
                        help,
                    },
                );
                return invalid;
            }
        };
        let tap = Tap {
            model,
            frozen,
            layer,
        };
        if let Layer::Index(k) = layer {
            let model_val = Val::new(Value::Model(tap.model.clone()), cx.file, base.span);
            if let Some(depth) = self.model_call(&model_val).and_then(|c| c.int("depth")) {
                if tap.block_index(depth).is_none() {
                    let help = if k == 0 {
                        Some(format!("blocks are numbered from 1, as in the paper; the first is `layer(1)`, the last `layer({depth})` or `layer(-1)`"))
                    } else {
                        Some(format!(
                            "valid blocks: 1 to {depth}, or -1 to -{depth} from the end"
                        ))
                    };
                    self.err(
                        cx.file,
                        Error::TapOutOfRange {
                            tap: tap.display(),
                            model: tap.model.display(),
                            depth,
                            span: span.into(),
                            help,
                        },
                    );
                    return invalid;
                }
            }
        }
        Val::new(Value::Tap(Box::new(tap)), cx.file, span)
    }

    fn binary(&mut self, cx: Cx, op: BinOp, l: Val, r: Val, span: Span) -> Val {
        let here = |v: Value| Val::new(v, cx.file, span);
        if l.is_invalid() || r.is_invalid() {
            return here(Value::Invalid);
        }
        if let Some(v) = arith(op, &l.value, &r.value) {
            return here(v);
        }
        let as_loss = |v: &Val| -> Option<Vec<LossTerm>> {
            match &v.value {
                Value::Loss(terms) => Some(terms.clone()),
                Value::Call(c) if c.ctor.kind == Kind::Loss => Some(vec![LossTerm {
                    weight: 1.0,
                    term: (**c).clone(),
                    file: v.file,
                    span: v.span,
                }]),
                _ => None,
            }
        };
        let scaled = |terms: Vec<LossTerm>, w: f64| -> Value {
            Value::Loss(
                terms
                    .into_iter()
                    .map(|t| LossTerm {
                        weight: t.weight * w,
                        ..t
                    })
                    .collect(),
            )
        };
        match (op, as_loss(&l), as_loss(&r)) {
            (BinOp::Add, Some(mut a), Some(b)) => {
                a.extend(b);
                return here(Value::Loss(a));
            }
            (BinOp::Mul, None, Some(b)) if l.as_f64().is_some() => {
                return here(scaled(b, l.as_f64().unwrap_or(1.0)))
            }
            (BinOp::Mul, Some(a), None) if r.as_f64().is_some() => {
                return here(scaled(a, r.as_f64().unwrap_or(1.0)))
            }
            (BinOp::Div, Some(a), None) if r.as_f64().is_some_and(|x| x != 0.0) => {
                return here(scaled(a, 1.0 / r.as_f64().unwrap_or(1.0)))
            }
            _ => {}
        }
        let help = if as_loss(&l).is_some() || as_loss(&r).is_some() {
            Some(
                "losses are sums of weighted terms: `clip() + 0.5 * mask_regularization(..)`"
                    .to_string(),
            )
        } else if op == BinOp::Div && r.as_f64() == Some(0.0) {
            Some("division by zero".into())
        } else {
            None
        };
        self.err(
            cx.file,
            Error::TypeMismatch {
                expected: format!("numbers (or losses) around `{}`", op.symbol()),
                found: format!("{} and {}", l.value.described(), r.value.described()),
                span: span.into(),
                help,
            },
        );
        here(Value::Invalid)
    }

    /// Checks `v` against `ty`, converting where the language allows (an integer where a
    /// number is expected, one value where a list is expected).
    pub(super) fn conform(&mut self, cx: Cx, v: Val, ty: &Ty) -> Val {
        // The value moves through: a conforming value is returned as it is, not copied.
        let Val {
            value,
            file,
            span,
            provenance,
        } = v;
        let with = |value: Value| Val {
            value,
            file,
            span,
            provenance,
        };
        let value = match (ty, value) {
            (_, Value::Invalid) => return with(Value::Invalid),
            (Ty::Int | Ty::Count, value @ Value::Int(_)) => return with(value),
            (Ty::Int | Ty::Count, Value::Frac(n, 1)) => return with(Value::Int(n)),
            (Ty::Int | Ty::Count, Value::Float(f)) if f.fract() == 0.0 && f.abs() < 9.0e18 => {
                return with(Value::Int(f as i64))
            }
            (
                Ty::Float | Ty::Fraction,
                value @ (Value::Int(_) | Value::Float(_) | Value::Frac(..)),
            ) => return with(value),
            (Ty::Str | Ty::Path, value @ Value::Str(_)) => return with(value),
            (Ty::Bool, value @ Value::Bool(_)) => return with(value),
            (Ty::Record, value @ Value::Record(_)) => return with(value),
            (Ty::List(t), Value::List(items)) => {
                let out = items.into_iter().map(|i| self.conform(cx, i, t)).collect();
                return with(Value::List(out));
            }
            (Ty::Tuple(ts), Value::Tuple(items)) if ts.len() == items.len() => {
                let out = items
                    .into_iter()
                    .zip(ts.iter())
                    .map(|(i, t)| self.conform(cx, i, t))
                    .collect();
                return with(Value::Tuple(out));
            }
            (Ty::Of(Kind::Loss), value @ Value::Loss(_)) => return with(value),
            (Ty::Of(Kind::Loss), Value::Call(c)) if c.ctor.kind == Kind::Loss => {
                return with(Value::Loss(vec![LossTerm {
                    weight: 1.0,
                    term: Arc::unwrap_or_clone(c),
                    file,
                    span,
                }]))
            }
            (Ty::Of(k), Value::Call(c)) if c.ctor.kind == *k => return with(Value::Call(c)),
            (Ty::Of(Kind::Model), value @ Value::Model(_)) => return with(value),
            (Ty::Of(Kind::Data), value @ Value::StageData { .. }) => return with(value),
            (Ty::ModelName | Ty::ModelOrStage, value @ Value::Model(_)) => return with(value),
            (Ty::ModelOrStage | Ty::Stage, value @ Value::Stage(_)) => return with(value),
            (Ty::Tap, value @ Value::Tap(_)) => return with(value),
            (Ty::TeacherTap, value @ Value::Teacher(_)) => return with(value),
            (Ty::TeacherTap, Value::Tap(t)) if t.frozen => return with(Value::Tap(t)),
            (Ty::TeacherTap, Value::Call(c)) if c.ctor.kind == Kind::Teacher => {
                return with(Value::Call(c))
            }
            (_, value) => value,
        };
        let v = with(value);
        // One value where a list is expected: a list of one.
        if let Ty::List(t) = ty {
            if !matches!(v.value, Value::List(_)) {
                let one = self.conform(cx, v, t);
                if one.is_invalid() {
                    return one;
                }
                return with(Value::List(vec![one]));
            }
        }
        let help = mismatch_help(ty, &v.value);
        self.err(
            cx.file,
            Error::TypeMismatch {
                expected: ty.described(),
                found: v.value.described(),
                span: v.span.into(),
                help,
            },
        );
        Val::invalid(v.file, v.span)
    }

    /// Reports a value outside its constraint; `what` names it, built only on an error.
    pub(super) fn constrain(
        &mut self,
        cx: Cx,
        v: &Val,
        c: Constraint,
        what: impl FnOnce() -> String,
    ) -> bool {
        if c == Constraint::None {
            return true;
        }
        if let Value::Str(s) = &v.value {
            if c.admits_str(s) {
                return true;
            }
            self.err(
                cx.file,
                Error::OutOfRange {
                    what: what(),
                    constraint: c.described(),
                    value: format!("\"{s}\""),
                    span: v.span.into(),
                    help: None,
                },
            );
            return false;
        }
        let Some(x) = v.as_f64() else { return true };
        if c.admits(x) {
            return true;
        }
        let help = match c {
            Constraint::Fraction => Some("fractions are in (0, 1]: `1/16`, `0.4`, `1`".to_string()),
            Constraint::Positive if x == 0.0 => Some("zero is not allowed here".to_string()),
            _ => None,
        };
        self.err(
            cx.file,
            Error::OutOfRange {
                what: what(),
                constraint: c.described(),
                value: show_number(&v.value),
                span: v.span.into(),
                help,
            },
        );
        false
    }
}

/// The help of an unknown argument: did you mean, then the arguments that exist.
fn unknown_arg_help(ctor: &Constructor, name: &str) -> Option<String> {
    let names: Vec<&str> = ctor.params.iter().map(|p| p.name).collect();
    if names.is_empty() {
        return Some(format!("`{}` takes no arguments", ctor.name));
    }
    Some(match suggest::closest(name, names.iter().copied()) {
        Some(c) => format!(
            "did you mean `{c}`? `{}` takes {}",
            ctor.name,
            list_names(&names)
        ),
        None => format!("`{}` takes {}", ctor.name, list_names(&names)),
    })
}

fn mismatch_help(ty: &Ty, found: &Value) -> Option<String> {
    match (ty, found) {
        (Ty::ModelName, Value::Call(c)) if c.ctor.kind == Kind::Model => {
            Some("declare the model with a name, `model vision = ...`, and list the name".into())
        }
        (Ty::Tap, Value::Model(r)) => Some(format!(
            "tap a block of the model: `{0}.last` or `{0}.layer(k)`",
            r.display()
        )),
        (Ty::Int | Ty::Count, Value::Float(_)) => {
            Some("write a whole number; suffixes help: `2K`, `5.4B`, `32Ki`".into())
        }
        (Ty::Of(Kind::Schedule), _) | (Ty::List(Ty::Of(Kind::Schedule)), _) => Some(
            "schedules: `warmup(steps)`, `cosine(final)`, `linear(final)`, `constant()`".into(),
        ),
        (Ty::Path, _) => Some("paths are strings: \"data/shards\"".into()),
        (Ty::Of(k), Value::Call(c)) => {
            let names: Vec<&str> = CONSTRUCTORS
                .iter()
                .filter(|x| x.kind == *k && !x.has_tag(Tag::Bare))
                .map(|x| x.name)
                .collect();
            let bare: Vec<&str> = CONSTRUCTORS
                .iter()
                .filter(|x| x.kind == *k && x.has_tag(Tag::Bare))
                .map(|x| x.name)
                .collect();
            let mut all = names;
            all.extend(bare);
            (!all.is_empty()).then(|| {
                format!(
                    "`{}` builds {}; {} come from {}",
                    c.ctor.name,
                    c.ctor.kind.described(),
                    plural_kind(*k),
                    list_names(&all)
                )
            })
        }
        (Ty::Of(k), _) => {
            let all: Vec<&str> = CONSTRUCTORS
                .iter()
                .filter(|x| x.kind == *k)
                .map(|x| x.name)
                .collect();
            (!all.is_empty()).then(|| format!("{} come from {}", plural_kind(*k), list_names(&all)))
        }
        _ => None,
    }
}

fn plural_kind(k: Kind) -> String {
    let d = k.described();
    let bare = d
        .strip_prefix("an ")
        .or_else(|| d.strip_prefix("a "))
        .unwrap_or(d);
    format!("{bare}s")
}

/// Fills omitted arguments with the catalogue's defaults, in the catalogue's order.
/// After an update: defaults derived from other arguments follow them (`mlp = 4 * width`).
pub(super) fn refresh_defaults(call: &mut CallValue, cx: Cx, span: Span) {
    let ctor = call.ctor;
    call.args.retain(|(n, v)| {
        !(v.provenance == Provenance::Default
            && matches!(
                ctor.param(n).map(|p| p.default),
                Some(DefaultValue::Times(..))
            ))
    });
    fill_defaults(call, cx, span);
}

fn fill_defaults(call: &mut CallValue, cx: Cx, span: Span) {
    let ctor = call.ctor;
    for p in ctor.params {
        if call.arg(p.name).is_some() {
            continue;
        }
        let value = match p.default {
            DefaultValue::Required | DefaultValue::Absent => continue,
            DefaultValue::Int(i) => Value::Int(i),
            DefaultValue::Float(f) => Value::Float(f),
            DefaultValue::Bool(b) => Value::Bool(b),
            DefaultValue::Str(s) => Value::Str(s.into()),
            DefaultValue::Variant(name) => match CONSTRUCTORS.iter().find(|c| c.name == name) {
                Some(ctor) => Value::Call(Arc::new(CallValue {
                    ctor,
                    args: Vec::new(),
                })),
                None => continue,
            },
            DefaultValue::Variants(names) => Value::List(
                names
                    .iter()
                    .filter_map(|n| CONSTRUCTORS.iter().find(|c| c.name == *n))
                    .map(|ctor| {
                        default_val(
                            Value::Call(Arc::new(CallValue {
                                ctor,
                                args: Vec::new(),
                            })),
                            cx,
                            span,
                        )
                    })
                    .collect(),
            ),
            DefaultValue::Numbers(xs) => Value::Tuple(
                xs.iter()
                    .map(|&x| {
                        let n = if matches!(p.ty, Ty::Tuple([Ty::Int, ..])) {
                            Value::Int(x as i64)
                        } else {
                            Value::Float(x)
                        };
                        default_val(n, cx, span)
                    })
                    .collect(),
            ),
            DefaultValue::EmptyList => Value::List(Vec::new()),
            DefaultValue::Times(k, other) => match call.int(other) {
                Some(x) => Value::Int(k.saturating_mul(x)),
                None => continue,
            },
        };
        call.args.push((p.name, default_val(value, cx, span)));
    }
    call.args
        .sort_by_key(|(n, _)| ctor.params.iter().position(|p| p.name == *n));
}

fn default_val(value: Value, cx: Cx, span: Span) -> Val {
    Val {
        value,
        file: cx.file,
        span,
        provenance: Provenance::Default,
    }
}

fn gcd(a: i128, b: i128) -> i128 {
    if b == 0 {
        a.abs()
    } else {
        gcd(b, a % b)
    }
}

fn frac(n: i128, d: i128) -> Option<Value> {
    if d == 0 {
        return None;
    }
    let g = gcd(n, d).max(1);
    let (mut n, mut d) = (n / g, d / g);
    if d < 0 {
        n = -n;
        d = -d;
    }
    match (i64::try_from(n), i64::try_from(d)) {
        (Ok(n), Ok(1)) => Some(Value::Frac(n, 1)),
        (Ok(n), Ok(d)) => Some(Value::Frac(n, d)),
        _ => Some(Value::Float(n as f64 / d as f64)),
    }
}

/// Exact arithmetic on integers and fractions; floats otherwise. `None` when the operands
/// are not both numbers (or a division by zero).
fn arith(op: BinOp, a: &Value, b: &Value) -> Option<Value> {
    let rational = |v: &Value| -> Option<(i128, i128)> {
        match *v {
            Value::Int(i) => Some((i as i128, 1)),
            Value::Frac(n, d) => Some((n as i128, d as i128)),
            _ => None,
        }
    };
    if let (Some((an, ad)), Some((bn, bd))) = (rational(a), rational(b)) {
        let result = match op {
            BinOp::Add => frac(an * bd + bn * ad, ad * bd),
            BinOp::Sub => frac(an * bd - bn * ad, ad * bd),
            BinOp::Mul => frac(an * bn, ad * bd),
            BinOp::Div => frac(an * bd, ad * bn),
        }?;
        // Integers stay integers where the result is whole and neither side was a fraction.
        return Some(match result {
            Value::Frac(n, 1)
                if matches!((a, b), (Value::Int(_), Value::Int(_))) && op != BinOp::Div =>
            {
                Value::Int(n)
            }
            other => other,
        });
    }
    let (x, y) = (a.as_f64()?, b.as_f64()?);
    let r = match op {
        BinOp::Add => x + y,
        BinOp::Sub => x - y,
        BinOp::Mul => x * y,
        BinOp::Div if y != 0.0 => x / y,
        BinOp::Div => return None,
    };
    Some(Value::Float(r))
}

/// A number as users write it.
pub(crate) fn show_number(v: &Value) -> String {
    match v {
        Value::Int(i) => i.to_string(),
        Value::Float(f) => format!("{f}"),
        Value::Frac(n, 1) => n.to_string(),
        Value::Frac(n, d) => format!("{n}/{d}"),
        other => other.described(),
    }
}
