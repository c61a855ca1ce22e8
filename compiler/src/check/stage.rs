//! Stage checks: fields against the catalogue's stage schema, phases and their
//! inheritance, teachers and exports, and the cross-field checks of language.md section 2
//! (resolution vs patch, taps, mask fraction x batch, devices and accumulation, frame
//! pooling, losses and the models they need, teacher dimensions, warnings).

use std::sync::Arc;

use pexc_stdlib::{stage_field, Tag, Ty, STAGE_FIELDS, UNITS};

use super::eval::show_number;
use super::suggest;
use super::value::*;
use super::{
    Binding, CheckedPhase, CheckedStage, Checker, Cx, FastMap, FastSet, FieldVal, Produced,
};
use crate::diagnostic::Error;
use crate::source::Span;
use crate::syntax::ast::{self, Item, StageItem};

/// Fields a training stage needs, in every phase (set on the stage or the phase).
const REQUIRED: &[&str] = &["data", "loss", "optimizer", "batch"];

impl Checker<'_> {
    pub(super) fn check_stages(&mut self) -> Vec<CheckedStage> {
        let loaded = self.loaded;
        let Some(ast) = &loaded.module(loaded.root).ast else {
            return Vec::new();
        };
        if ast.items.is_empty() {
            self.err(
                loaded.root,
                Error::EmptyFile {
                    span: Span::new(0, 0).into(),
                },
            );
        }
        let mut out = Vec::new();
        let mut seen = FastSet::default();
        for item in &ast.items {
            if let Item::Stage(s) = item {
                // A duplicate stage was reported when scopes were built.
                if !seen.insert(s.name.name.clone()) {
                    continue;
                }
                let idx = self.stage_index.get(&s.name.name).copied().unwrap_or(0);
                out.push(self.check_stage(idx, s));
            }
        }
        out
    }

    fn check_stage(&mut self, idx: usize, s: &ast::Stage) -> CheckedStage {
        let file = self.loaded.root;
        // Teachers first: fields and losses refer to them.
        let mut teachers: FastMap<String, Val> = FastMap::default();
        let mut teacher_list: Vec<Binding> = Vec::new();
        let mut names_seen: FastMap<String, Span> = FastMap::default();
        let no_teachers = Cx {
            file,
            stage: Some(idx),
            teachers: None,
        };
        for item in &s.items {
            let StageItem::Teacher(b) = item else {
                continue;
            };
            if let Some(first) = names_seen.get(&b.name.name) {
                self.err(
                    file,
                    Error::Duplicate {
                        name: b.name.name.clone(),
                        span: b.name.span.into(),
                        first: (*first).into(),
                    },
                );
                continue;
            }
            names_seen.insert(b.name.name.clone(), b.name.span);
            let v = self.eval(no_teachers, &b.value, Some(&Ty::TeacherTap));
            let v = self.conform(no_teachers, v, &Ty::TeacherTap);
            teachers.insert(b.name.name.clone(), v.clone());
            teacher_list.push(Binding {
                name: b.name.name.clone(),
                name_span: b.name.span,
                value: v,
            });
        }
        let cx = Cx {
            file,
            stage: Some(idx),
            teachers: Some(&teachers),
        };

        let mut fields = Vec::new();
        let mut phases: Vec<CheckedPhase> = Vec::new();
        let mut exports = Vec::new();
        let stage_fields: Vec<&ast::Field> = s
            .items
            .iter()
            .filter_map(|i| match i {
                StageItem::Field(f) => Some(f),
                _ => None,
            })
            .collect();
        fields.extend(self.check_block(cx, &stage_fields, false, &teacher_list));
        let mut phase_names: FastMap<String, Span> = FastMap::default();
        for item in &s.items {
            match item {
                StageItem::Phase(p) => {
                    if let Some(first) = phase_names.get(&p.name.name) {
                        self.err(
                            file,
                            Error::Duplicate {
                                name: p.name.name.clone(),
                                span: p.name.span.into(),
                                first: (*first).into(),
                            },
                        );
                        continue;
                    }
                    phase_names.insert(p.name.name.clone(), p.name.span);
                    let refs: Vec<&ast::Field> = p.fields.iter().collect();
                    let fs = self.check_block(cx, &refs, true, &teacher_list);
                    phases.push(CheckedPhase {
                        name: p.name.name.clone(),
                        span: p.name.span,
                        fields: fs,
                    });
                }
                StageItem::Export(b) => {
                    if let Some(first) = names_seen.get(&b.name.name) {
                        self.err(
                            file,
                            Error::Duplicate {
                                name: b.name.name.clone(),
                                span: b.name.span.into(),
                                first: (*first).into(),
                            },
                        );
                        continue;
                    }
                    names_seen.insert(b.name.name.clone(), b.name.span);
                    let v = self.eval_as(cx, &b.value, &Ty::ModelName);
                    exports.push(Binding {
                        name: b.name.name.clone(),
                        name_span: b.name.span,
                        value: v,
                    });
                }
                _ => {}
            }
        }
        if !self.overrides.is_empty() {
            self.apply_stage_overrides(cx, &s.name.name, s.name.span, &mut fields, &mut phases);
        }
        let stage = CheckedStage {
            name: s.name.name.clone(),
            name_span: s.name.span,
            span: s.span,
            doc: s.doc.clone(),
            fields,
            phases,
            teachers: teacher_list,
            exports,
        };
        self.check_semantics(&stage);
        stage
    }

    /// The fields of a stage or phase block: schema, duplicates, units, types, ranges.
    fn check_block(
        &mut self,
        cx: Cx,
        fields: &[&ast::Field],
        in_phase: bool,
        teachers: &[Binding],
    ) -> Vec<FieldVal> {
        let mut out: Vec<FieldVal> = Vec::new();
        let mut unit: Option<(&str, Span)> = None;
        for f in fields {
            let name = f.name.name.as_str();
            let Some(schema) = stage_field(name) else {
                let names: Vec<&str> = STAGE_FIELDS.iter().map(|s| s.name).collect();
                let help = match suggest::closest(name, names.iter().copied()) {
                    Some(c) => Some(format!("did you mean `{c}`?")),
                    None => Some(format!(
                        "stage fields: {}; blocks: `phase`, `teacher`, `export`",
                        names.join(", ")
                    )),
                };
                self.err(
                    cx.file,
                    Error::UnknownField {
                        name: name.into(),
                        span: f.name.span.into(),
                        help,
                    },
                );
                continue;
            };
            if in_phase && !schema.in_phase {
                self.err(
                    cx.file,
                    Error::StageOnlyField {
                        name: name.into(),
                        span: f.name.span.into(),
                    },
                );
                continue;
            }
            if let Some(prev) = out.iter().find(|x| x.name == name) {
                let first = prev.name_span;
                self.err(
                    cx.file,
                    Error::DuplicateField {
                        name: name.into(),
                        span: f.name.span.into(),
                        first: first.into(),
                    },
                );
                continue;
            }
            if UNITS.contains(&name) {
                if let Some((first_unit, first)) = unit {
                    self.err(
                        cx.file,
                        Error::UnitsConflict {
                            block: if in_phase {
                                "the phase".into()
                            } else {
                                "the stage".into()
                            },
                            first_unit: first_unit.into(),
                            second_unit: name.into(),
                            span: f.name.span.into(),
                            first: first.into(),
                        },
                    );
                    continue;
                }
                unit = Some((schema.name, f.name.span));
            }
            let mut v = self.eval(cx, &f.value, Some(&schema.ty));
            if matches!(name, "train" | "freeze") {
                v = self.reject_teachers(cx, v, teachers);
            }
            let v = self.conform(cx, v, &schema.ty);
            self.constrain(cx, &v, schema.constraint, || format!("`{name}`"));
            out.push(FieldVal {
                name: schema.name,
                name_span: f.name.span,
                value: v,
            });
        }
        out
    }

    /// A teacher listed among the trained models is an error of its own.
    fn reject_teachers(&mut self, cx: Cx, v: Val, teachers: &[Binding]) -> Val {
        let items: &[Val] = match &v.value {
            Value::List(items) => items,
            Value::Teacher(_) => std::slice::from_ref(&v),
            _ => return v,
        };
        let mut bad = false;
        for item in items {
            if let Value::Teacher(t) = &item.value {
                let decl = teachers
                    .iter()
                    .find(|b| &b.name == t)
                    .map_or(item.span, |b| b.name_span);
                self.err(
                    cx.file,
                    Error::TeacherTrained {
                        name: t.clone(),
                        span: item.span.into(),
                        teacher: decl.into(),
                    },
                );
                bad = true;
            }
        }
        if bad {
            Val::invalid(v.file, v.span)
        } else {
            v
        }
    }

    /// The cross-field checks, over every phase with inheritance applied.
    fn check_semantics(&mut self, st: &CheckedStage) {
        let file = self.loaded.root;
        let phases: Vec<Option<usize>> = if st.phases.is_empty() {
            vec![None]
        } else {
            (0..st.phases.len()).map(Some).collect()
        };
        let block_name = |p: Option<usize>| match p {
            Some(i) => format!("phase `{}` of stage `{}`", st.phases[i].name, st.name),
            None => format!("stage `{}`", st.name),
        };
        let block_span = |p: Option<usize>| p.map_or(st.name_span, |i| st.phases[i].span);
        let is_engine = st.field("caption").is_some();

        // The stage's models, from `train` and `freeze` of the stage and every phase.
        let mut model_vals: Vec<Val> = Vec::new();
        let mut any_train = false;
        for p in &phases {
            for name in ["train", "freeze"] {
                if let Some(f) = st.field_in(*p, name) {
                    if let Value::List(items) = &f.value.value {
                        if name == "train" && !items.is_empty() {
                            any_train = true;
                        }
                        for i in items {
                            if !model_vals.iter().any(|m| m.value == i.value) {
                                model_vals.push(i.clone());
                            }
                        }
                    } else if name == "train" && f.value.is_invalid() {
                        any_train = true;
                    }
                }
            }
        }
        let models: Vec<(String, Arc<CallValue>)> = model_vals
            .iter()
            .filter_map(|v| Some((model_name(v), self.model_call(v)?)))
            .collect();
        // A model list with an error already reported cannot say which models are missing.
        let models_known = model_vals.len() == models.len()
            && !phases.iter().any(|p| {
                ["train", "freeze"]
                    .iter()
                    .any(|f| st.field_in(*p, f).is_some_and(|v| v.value.is_invalid()))
            });
        // Frozen teachers run on the same images: their patch sizes matter too.
        let mut vision_models = models.clone();
        for t in &st.teachers {
            vision_models.extend(self.teacher_models(&t.value));
        }
        vision_models.retain(|(_, c)| c.has_tag(Tag::Vision));

        if !is_engine {
            // Required fields and units of work.
            for field in REQUIRED {
                let missing: Vec<Option<usize>> = phases
                    .iter()
                    .copied()
                    .filter(|p| st.field_in(*p, field).is_none())
                    .collect();
                if missing.is_empty() {
                    continue;
                }
                let help = match (missing.as_slice(), st.phases.is_empty()) {
                    (_, true) => Some(format!(
                        "add `{field}: ..` to the stage; {}",
                        field_doc(field)
                    )),
                    (m, false) => Some(format!(
                        "set `{field}` on the stage, or in every phase (missing in {})",
                        m.iter()
                            .filter_map(|p| p.map(|i| format!("`{}`", st.phases[i].name)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                };
                self.err(
                    file,
                    Error::MissingField {
                        stage: st.name.clone(),
                        field: (*field).into(),
                        span: st.name_span.into(),
                        help,
                    },
                );
            }
            for p in &phases {
                if !UNITS.iter().any(|u| st.field_in(*p, u).is_some()) {
                    self.err(
                        file,
                        Error::UnitsMissing {
                            block: block_name(*p),
                            span: block_span(*p).into(),
                        },
                    );
                }
            }
            if !any_train {
                let span = st.field("train").map_or(st.name_span, |f| f.name_span);
                self.err(
                    file,
                    Error::TrainsNothing {
                        stage: st.name.clone(),
                        span: span.into(),
                    },
                );
            }
        } else if st.field("data").is_none() {
            self.err(
                file,
                Error::MissingField {
                    stage: st.name.clone(),
                    field: "data".into(),
                    span: st.name_span.into(),
                    help: Some("a data-engine stage captions the clips of its `data`".into()),
                },
            );
        }

        let mut reported: FastSet<(usize, String)> = FastSet::default();
        let mut previous_resolution: Option<(i64, (crate::source::FileId, Span))> = None;
        for p in &phases {
            // Resolution against every vision tower's patch size.
            if let Some(res_field) = st.field_in(*p, "resolution") {
                if let Some(res) = res_field.value.as_int() {
                    for (name, call) in &vision_models {
                        let Some(patch) = call.int("patch") else {
                            continue;
                        };
                        if patch > 0
                            && res > 0
                            && res % patch != 0
                            && reported.insert((res_field.value.span.start(), name.clone()))
                        {
                            let below = res / patch * patch;
                            let above = below + patch;
                            let help = if below > 0 {
                                Some(format!("nearest valid resolutions: {below} or {above} ({} or {} patches of {patch} per side)", below / patch, above / patch))
                            } else {
                                Some(format!("the smallest valid resolution is {patch}"))
                            };
                            self.err(
                                res_field.value.file,
                                Error::NotDivisible {
                                    resolution: res,
                                    patch,
                                    model: name.clone(),
                                    span: res_field.value.span.into(),
                                    help,
                                },
                            );
                        }
                    }
                    if let Some((prev, prev_span)) = previous_resolution {
                        let set_here = p.is_some_and(|i| {
                            st.phases[i].fields.iter().any(|f| f.name == "resolution")
                        });
                        if res < prev && set_here {
                            // A secondary label must be in the same file (a `--set` may
                            // have written either).
                            self.err(
                                res_field.value.file,
                                Error::ResolutionDecreases {
                                    from: prev,
                                    to: res,
                                    span: res_field.value.span.into(),
                                    previous: (prev_span.0 == res_field.value.file)
                                        .then(|| prev_span.1.into()),
                                },
                            );
                        }
                    }
                    previous_resolution = Some((res, (res_field.value.file, res_field.value.span)));
                }
            }

            let batch_field = st.field_in(*p, "batch");
            let batch = batch_field.and_then(|b| b.value.as_int());
            // Mask regularisation: fraction x batch must be whole.
            if let (Some(loss), Some(batch)) = (st.field_in(*p, "loss"), batch) {
                if let Value::Loss(terms) = &loss.value.value {
                    for t in terms
                        .iter()
                        .filter(|t| t.term.ctor.name == "mask_regularization")
                    {
                        let Some(fraction) = t.term.arg("fraction") else {
                            continue;
                        };
                        if let Some(product) = whole_product(&fraction.value, batch) {
                            if !product.0
                                && reported.insert((fraction.span.start(), format!("mask{batch}")))
                            {
                                let fraction_text = show_number(&fraction.value);
                                let help = Some(format!(
                                    "choose a batch that {fraction_text} divides into whole samples ({}), or a fraction n/{batch}",
                                    nearby_batches(&fraction.value, batch)
                                ));
                                self.err(
                                    fraction.file,
                                    Error::MaskFraction {
                                        fraction: fraction_text,
                                        batch,
                                        product: product.1,
                                        span: fraction.span.into(),
                                        batch_span: batch_field
                                            .filter(|b| b.value.file == fraction.file)
                                            .map(|b| b.value.span.into()),
                                        help,
                                    },
                                );
                            }
                        }
                    }
                }
            }
            // Devices and accumulation split the batch.
            if let (Some(batch), Some(bf)) = (batch, batch_field) {
                let devices = st
                    .field("devices")
                    .and_then(|f| f.value.as_int())
                    .unwrap_or(1);
                let acc_field = st.field_in(*p, "accumulate");
                let accumulate = acc_field.and_then(|f| f.value.as_int()).unwrap_or(1);
                let by = devices.saturating_mul(accumulate);
                if by > 1
                    && batch % by != 0
                    && reported.insert((bf.value.span.start(), format!("div{by}")))
                {
                    let why = match (devices > 1, accumulate > 1) {
                        (true, true) => {
                            format!("{devices} devices x {accumulate} accumulation steps")
                        }
                        (true, false) => format!("{devices} devices"),
                        _ => format!("{accumulate} accumulation steps"),
                    };
                    let other = acc_field
                        .filter(|_| accumulate > 1)
                        .or(st.field("devices"))
                        .filter(|f| f.value.file == bf.value.file)
                        .map(|f| f.value.span.into());
                    let below = batch / by * by;
                    let help = Some(format!(
                        "nearest divisible batches: {} or {}",
                        below.max(by),
                        below + by
                    ));
                    self.err(
                        bf.value.file,
                        Error::BatchIndivisible {
                            batch,
                            by,
                            why,
                            span: bf.value.span.into(),
                            other,
                            help,
                        },
                    );
                }
            }
            // Frame pooling needs video data.
            if let (Some(video), Some(data)) = (st.field_in(*p, "video"), st.field_in(*p, "data")) {
                let is_video = match &data.value.value {
                    Value::Call(c) => c.has_tag(Tag::Video),
                    Value::StageData { .. } | Value::Invalid => true,
                    _ => true,
                };
                if !is_video && reported.insert((video.value.span.start(), "video".into())) {
                    self.err(
                        video.value.file,
                        Error::FramePoolOnImages {
                            span: video.value.span.into(),
                            data: (data.value.file == video.value.file)
                                .then_some(data.value.span.into()),
                        },
                    );
                }
            }
            // Learning rates above 1.
            if let Some(opt) = st.field_in(*p, "optimizer") {
                if let Value::Call(c) = &opt.value.value {
                    if let Some(lr) = c.arg("lr") {
                        if lr.as_f64().is_some_and(|x| x > 1.0)
                            && reported.insert((lr.span.start(), "lr".into()))
                        {
                            self.err(
                                lr.file,
                                Error::LrHigh {
                                    lr: show_number(&lr.value),
                                    span: lr.span.into(),
                                },
                            );
                        }
                    }
                }
            }
            // Losses: the models they need, and teacher dimensions.
            if let Some(loss) = st.field_in(*p, "loss") {
                if let Value::Loss(terms) = &loss.value.value {
                    for t in terms {
                        if !reported.insert((t.span.start(), "loss".into())) {
                            continue;
                        }
                        self.check_loss_term(st, t, &models, models_known);
                        self.check_teacher_kind(st, t);
                    }
                }
            }
        }
        self.check_projector_widths(&models);
        self.check_captioner(st);
    }

    fn check_loss_term(
        &mut self,
        st: &CheckedStage,
        t: &LossTerm,
        models: &[(String, Arc<CallValue>)],
        models_known: bool,
    ) {
        for need in t.term.ctor.needs.iter().filter(|_| models_known) {
            if !models.iter().any(|(_, c)| c.has_tag(*need)) {
                let (needed, ctor) = match need {
                    Tag::Vision => ("a vision tower", "vit"),
                    Tag::TextEncoder => ("a text tower", "clip_text"),
                    Tag::Decoder => ("a text decoder", "text_decoder"),
                    Tag::Projector => ("a projector", "mlp_projector"),
                    _ => ("a model", "vit"),
                };
                let help = Some(format!(
                    "declare one (`model m = {ctor}(..)`) and list it in `train`, or in `freeze` to use it without training it"
                ));
                self.err(
                    t.file,
                    Error::MissingModel {
                        loss: format!("`{}`", t.term.ctor.name),
                        needed: needed.into(),
                        span: t.span.into(),
                        help,
                    },
                );
            }
        }
        if t.term.ctor.name == "token_cosine" {
            let project = matches!(
                t.term.arg("project").map(|v| &v.value),
                Some(Value::Bool(true))
            );
            let student = t.term.arg("student").and_then(|v| self.tap_width(v, st));
            let teacher = t.term.arg("teacher").and_then(|v| self.tap_width(v, st));
            if let (Some(s), Some(w), false) = (student, teacher, project) {
                if s != w {
                    let help = Some(format!(
                        "add `project: true` to learn a linear map from width {s} to {w}, or tap a model of width {w}"
                    ));
                    self.err(
                        t.file,
                        Error::DimMismatch {
                            loss: "`token_cosine`".into(),
                            student: s,
                            teacher: w,
                            span: t.span.into(),
                            help,
                        },
                    );
                }
            }
        }
    }

    /// The token width at a tap (a student tap, a teacher name, or a frozen model).
    fn tap_width(&self, v: &Val, st: &CheckedStage) -> Option<i64> {
        match &v.value {
            Value::Tap(t) => {
                let m = Val::new(Value::Model(t.model.clone()), v.file, v.span);
                self.model_call(&m)?.int("width")
            }
            Value::Teacher(name) => {
                let b = st.teachers.iter().find(|b| &b.name == name)?;
                self.teacher_model(&b.value)
                    .and_then(|(_, c)| c.int("width"))
            }
            Value::Call(_) => self.teacher_model(v).and_then(|(_, c)| c.int("width")),
            _ => None,
        }
    }

    /// The model behind a teacher: `frozen(m)` or `frozen(m).layer(k)`.
    /// Every model behind a teacher: a tap's model, a frozen model and its text tower, or
    /// the models a frozen stage trains.
    fn teacher_models(&self, v: &Val) -> Vec<(String, Arc<CallValue>)> {
        match &v.value {
            Value::Call(c) if c.ctor.name == "frozen" => {
                let mut out = Vec::new();
                match c.arg("model").map(|m| &m.value) {
                    Some(Value::Stage(s)) => out.extend(self.stage_models(s)),
                    Some(Value::Model(_)) => out.extend(self.teacher_model(v)),
                    _ => {}
                }
                if let Some(text) = c.arg("text") {
                    out.extend(self.model_call(text).map(|call| (model_name(text), call)));
                }
                out
            }
            _ => self.teacher_model(v).into_iter().collect(),
        }
    }

    /// The models stage `name` trains, with their declarations.
    fn stage_models(&self, name: &str) -> Vec<(String, Arc<CallValue>)> {
        let Some(syn) = self.stage_index.get(name).map(|&i| &self.stage_syn[i]) else {
            return Vec::new();
        };
        syn.produces
            .iter()
            .filter_map(|(n, p)| match p {
                Produced::Model(Some(def)) => {
                    let id = self.root_def(def)?;
                    let r = ModelRef::Def(id, def.clone());
                    let call = super::model_call(&self.defs, &r)?.clone();
                    Some((format!("{name}.{n}"), call))
                }
                _ => None,
            })
            .collect()
    }

    /// The checks of a loss term on its teacher: distillation needs a frozen CLIP, token
    /// losses need tokens.
    fn check_teacher_kind(&mut self, st: &CheckedStage, t: &LossTerm) {
        let Some(arg) = t.term.arg("teacher") else {
            return;
        };
        let (shown, teacher) = match &arg.value {
            Value::Teacher(n) => match st.teachers.iter().find(|b| &b.name == n) {
                Some(b) => (n.clone(), b.value.clone()),
                None => return,
            },
            _ => ("the teacher".to_string(), arg.clone()),
        };
        let has_invalid_arg =
            matches!(&teacher.value, Value::Call(c) if c.args.iter().any(|(_, a)| a.is_invalid()));
        if teacher.is_invalid() || has_invalid_arg {
            return;
        }
        let is_mask_logits =
            matches!(&teacher.value, Value::Call(c) if c.ctor.name == "mask_logits");
        let frozen_stage = match &teacher.value {
            Value::Call(c) if c.ctor.name == "frozen" => match c.arg("model").map(|m| &m.value) {
                Some(Value::Stage(s)) => Some(s.clone()),
                _ => None,
            },
            _ => None,
        };
        let loss = format!("`{}`", t.term.ctor.name);
        let (needed, found, help) = match t.term.ctor.name {
            "distill_kl" => {
                let models = self.teacher_models(&teacher);
                let has = |tag| models.iter().any(|(_, c)| c.has_tag(tag));
                if has(Tag::Vision) && has(Tag::TextEncoder) {
                    return;
                }
                let found = if is_mask_logits {
                    "mask logits".to_string()
                } else if let Some(s) = &frozen_stage {
                    format!("stage `{s}`, which does not train both a vision and a text tower")
                } else if has(Tag::Vision) {
                    "a frozen vision tower without its text tower".to_string()
                } else {
                    "not a CLIP".to_string()
                };
                (
                    "a frozen CLIP (a vision and a text tower)",
                    found,
                    "write `frozen(stage)` for a stage that trains both towers, or \
                     `frozen(vision, text: text)` for a CLIP from checkpoints",
                )
            }
            "token_cosine" | "pairwise_similarity" if frozen_stage.is_some() => (
                "the tokens of one model",
                format!("the whole stage `{}`", frozen_stage.unwrap_or_default()),
                "tap one model of the stage: `frozen(stage.vision).layer(k)`",
            ),
            "token_cosine" if is_mask_logits => (
                "the tokens of a model",
                "mask logits".to_string(),
                "mask logits are compared by `pairwise_similarity`, which matches similarity matrices",
            ),
            _ => return,
        };
        self.err(
            t.file,
            Error::TeacherKind {
                loss,
                needed: needed.into(),
                teacher: shown,
                found,
                span: arg.span.into(),
                help: Some(help.into()),
            },
        );
    }

    /// The captioner's models must be what its arguments say.
    fn check_captioner(&mut self, st: &CheckedStage) {
        let Some(f) = st.field("caption") else { return };
        let Value::Call(c) = &f.value.value else {
            return;
        };
        for (arg, tag, needed) in [
            ("vision", Tag::Vision, "a vision tower (`vit`)"),
            ("projector", Tag::Projector, "a projector (`mlp_projector`)"),
            ("decoder", Tag::Decoder, "a text decoder (`text_decoder`)"),
        ] {
            let Some(v) = c.arg(arg) else { continue };
            let Some(call) = self.model_call(v) else {
                continue;
            };
            if !call.has_tag(tag) {
                let found = format!("{} (`{}`)", model_role(&call), call.ctor.name);
                self.err(
                    v.file,
                    Error::ModelKind {
                        ctor: "captioner".into(),
                        arg: arg.into(),
                        needed: needed.into(),
                        model: model_name(v),
                        found,
                        span: v.span.into(),
                        help: Some(format!("pass {needed} as `{arg}`")),
                    },
                );
            }
        }
    }

    fn teacher_model(&self, v: &Val) -> Option<(String, Arc<CallValue>)> {
        let model = match &v.value {
            Value::Tap(t) => t.model.clone(),
            Value::Call(c) if c.ctor.name == "frozen" => match &c.arg("model")?.value {
                Value::Model(r) => r.clone(),
                _ => return None,
            },
            _ => return None,
        };
        let call = self.model_call(&Val::new(Value::Model(model.clone()), v.file, v.span))?;
        Some((model.display(), call))
    }

    /// A projector's output feeds the decoder: the widths must agree.
    fn check_projector_widths(&mut self, models: &[(String, Arc<CallValue>)]) {
        let decoders: Vec<&(String, Arc<CallValue>)> = models
            .iter()
            .filter(|(_, c)| c.has_tag(Tag::Decoder))
            .collect();
        for (pname, proj) in models.iter().filter(|(_, c)| c.has_tag(Tag::Projector)) {
            let Some(out) = proj.arg("out") else { continue };
            let Some(out_w) = out.as_int() else { continue };
            for (dname, dec) in &decoders {
                let Some(w) = dec.int("width") else { continue };
                if w != out_w {
                    self.err(out.file, Error::WidthMismatch {
                        what: format!("projector `{pname}` outputs width {out_w}, but decoder `{dname}` reads width {w}"),
                        label: format!("{out_w}"),
                        span: out.span.into(),
                        help: Some(format!("set `out: {w}` on `{pname}`")),
                    });
                }
            }
        }
    }
}

/// What a model is, in words.
fn model_role(c: &CallValue) -> &'static str {
    if c.has_tag(Tag::Vision) {
        "a vision tower"
    } else if c.has_tag(Tag::TextEncoder) {
        "a text tower"
    } else if c.has_tag(Tag::Decoder) {
        "a text decoder"
    } else if c.has_tag(Tag::Projector) {
        "a projector"
    } else {
        "a model"
    }
}

fn model_name(v: &Val) -> String {
    match &v.value {
        Value::Model(r) => r.display(),
        other => other.described(),
    }
}

fn field_doc(name: &str) -> String {
    stage_field(name).map_or(String::new(), |f| {
        format!("{}: {}", f.ty.described(), f.doc)
    })
}

/// Whether `fraction x batch` is whole, and the product in words.
fn whole_product(fraction: &Value, batch: i64) -> Option<(bool, String)> {
    match *fraction {
        Value::Int(i) => Some((true, (i as i128 * batch as i128).to_string())),
        Value::Frac(n, d) => {
            let num = n as i128 * batch as i128;
            Some((num % d as i128 == 0, format!("{}", num as f64 / d as f64)))
        }
        Value::Float(f) => {
            let x = f * batch as f64;
            Some(((x - x.round()).abs() < 1e-9, format!("{x}")))
        }
        _ => None,
    }
}

/// Batches near `batch` for which the fraction gives whole samples.
fn nearby_batches(fraction: &Value, batch: i64) -> String {
    let step = match *fraction {
        Value::Frac(_, d) => d,
        Value::Float(f) => {
            // The smallest denominator that makes f exact, up to 10^6.
            let mut d = 1i64;
            while d < 1_000_000 && ((f * d as f64) - (f * d as f64).round()).abs() > 1e-9 {
                d *= 10;
            }
            d
        }
        _ => 1,
    }
    .max(1);
    let below = batch / step * step;
    if below == 0 {
        format!("a multiple of {step}")
    } else {
        format!("{below} or {}", below + step)
    }
}
