//! Lowering: a checked experiment (no errors) -> the plan the runtime executes.
//!
//! Semantics fixed here (and shown by `pexc plan` / `explain`):
//! - a stage without phases has one phase, named after the stage;
//! - `samples` become steps with the phase's batch, rounding up; `epochs` of generated data
//!   become steps over its training part (`count` minus `round(count x held_out)`),
//!   rounding up; `work` says how;
//! - a stage-level `lr` spans all the stage's steps; a phase-level `lr` starts at the
//!   phase's first step. Segments without `steps` share what the segments with `steps`
//!   leave; a decay starts where the previous segment ended (the peak at first); a
//!   segment longer than what is left is kept whole and simply cut off by the end;
//! - a model named in `train`/`freeze` starts from the `init:` stage's model of that name
//!   when that stage holds one, else from its `weights`, else at random; `stage.model`
//!   always starts from that stage;
//! - FLOPs (language.md section 3): trained models count 3 x forward, frozen models and
//!   teachers 1 x; a vision tower runs the blocks its consumers need (a projector reading
//!   block k runs k blocks) and its pooling and projection only for embedding losses;
//!   `mask_regularization` adds the trained vision towers' cost for its fraction of the
//!   batch; video samples cost their frames; a caption stage costs one forward per clip
//!   (the captioner reads every frame of a clip: vision per frame, all frames' tokens into
//!   the projector and, with the caption, through the decoder; its batch defaults to 16);
//! - memory per device: the micro-batch is batch / devices / accumulate; fp32 holds
//!   everything in 4 bytes; bf16 keeps fp32 master weights plus a bf16 copy of trained
//!   models, frozen models in bf16, fp32 gradients and optimizer moments, bf16 activations.

pub mod cost;
pub mod plan;

use std::path::Path;

use indexmap::IndexMap;
use pexc_stdlib::{Tag, Ty};
use sha2::{Digest, Sha256};

use crate::check::{CallValue, Checked, CheckedStage, ModelRef, Val, Value};
use crate::diagnostic::{Error, Problems};
use crate::source::{FileId, Origin};
use plan::*;

/// Lowers a checked experiment. Call only when checking found no errors; problems that
/// only planning can see (epochs of data of unknown size) go to `problems`.
pub fn lower(checked: &Checked, problems: &mut Problems) -> Plan {
    let lw = Lowerer { checked };
    let mut stages: Vec<StagePlan> = Vec::new();
    for &i in &checked.graph.order {
        let Some(st) = checked
            .stages
            .iter()
            .find(|s| s.name == checked.graph.names[i])
        else {
            continue;
        };
        let after: Vec<String> = checked.graph.after[i]
            .iter()
            .map(|&j| checked.graph.names[j].clone())
            .collect();
        let plan = lw.stage(st, after, &stages, problems);
        stages.push(plan);
    }
    let train_flops = stages.iter().map(|s| s.train_flops).sum();
    Plan {
        stages,
        train_flops,
        source: checked.loaded.sources.get(checked.loaded.root).name.clone(),
    }
}

/// A model declared in the root file, in plan form: its constructor with every argument
/// resolved (presets expanded, `with` applied, paths relative to the file that wrote
/// them). For commands that use a model outside any stage (`pexc embed`, weight checks).
pub fn model_def(checked: &Checked, name: &str) -> Option<Ctor> {
    let root = checked.loaded.root;
    let id = checked.defs.iter().position(|d| {
        d.file == root && d.kind == crate::syntax::ast::DefKind::Model && d.name == name
    })?;
    let call = checked.model_call(&ModelRef::Def(crate::check::DefId(id), name.into()))?;
    Some(Lowerer { checked }.ctor(call))
}

/// A constructor call in plan form (see `model_def`).
pub fn call_ctor(checked: &Checked, call: &CallValue) -> Ctor {
    Lowerer { checked }.ctor(call)
}

struct Lowerer<'c> {
    checked: &'c Checked,
}

/// What runs in one phase, for the cost model.
struct Running<'a> {
    model: &'a ModelPlan,
    trained: bool,
    /// Blocks of a vision tower that run.
    blocks: u64,
    /// Whether its pooling and projection run.
    head: bool,
}

impl Lowerer<'_> {
    fn stage(
        &self,
        st: &CheckedStage,
        after: Vec<String>,
        done: &[StagePlan],
        problems: &mut Problems,
    ) -> StagePlan {
        let phase_ids: Vec<Option<usize>> = if st.phases.is_empty() {
            vec![None]
        } else {
            (0..st.phases.len()).map(Some).collect()
        };
        let field = |p: Option<usize>, name: &str| st.field_in(p, name).map(|f| &f.value);
        let int = |p: Option<usize>, name: &str| field(p, name).and_then(Val::as_int);
        let init = match st.field("init").map(|f| &f.value.value) {
            Some(Value::Stage(s)) => Some(s.clone()),
            _ => None,
        };
        let init_plan = init
            .as_ref()
            .and_then(|s| done.iter().find(|d| &d.name == s));
        let caption = st.field("caption").and_then(|f| match &f.value.value {
            Value::Call(c) => Some(c),
            _ => None,
        });

        // The stage's models, in order of first mention.
        let mut refs: Vec<ModelRef> = Vec::new();
        let push = |r: &ModelRef, refs: &mut Vec<ModelRef>| {
            if !refs.iter().any(|x| x.display() == r.display()) {
                refs.push(r.clone());
            }
        };
        for &p in &phase_ids {
            for name in ["train", "freeze"] {
                for r in model_list(field(p, name)) {
                    push(&r, &mut refs);
                }
            }
        }
        if let Some(c) = caption {
            for name in ["vision", "projector", "decoder"] {
                if let Some(Value::Model(r)) = c.arg(name).map(|v| &v.value) {
                    push(r, &mut refs);
                }
            }
        }
        // A projector's input tower runs even when no list names it.
        for r in refs.clone() {
            if let Some(Value::Tap(t)) = self
                .checked
                .model_call(&r)
                .and_then(|c| c.arg("input"))
                .map(|v| &v.value)
            {
                push(&relative_to(&r, &t.model), &mut refs);
            }
        }
        let models: Vec<ModelPlan> = refs
            .iter()
            .filter_map(|r| self.model(r, init_plan, &refs))
            .collect();

        let teachers: Vec<TeacherPlan> = st
            .teachers
            .iter()
            .map(|b| self.teacher(&b.name, &b.value, init_plan, done))
            .collect();

        // Phases: work, data, optimisation, loss.
        let mut phases: Vec<PhasePlan> = Vec::new();
        let mut first_step = 0u64;
        for &p in &phase_ids {
            let name = p.map_or(st.name.clone(), |i| st.phases[i].name.clone());
            let data_val = field(p, "data");
            let data = data_val.map(|v| match &v.value {
                Value::StageData { stage, name } => DataPlan::Stage {
                    stage: stage.clone(),
                    dataset: name.clone(),
                },
                Value::Call(c) => DataPlan::Source(self.ctor(c)),
                _ => DataPlan::Stage {
                    stage: String::new(),
                    dataset: String::new(),
                },
            });
            // A captioner reads every frame of a clip.
            let frames = match (
                field(p, "video").map(|v| &v.value),
                data_val.map(|v| &v.value),
            ) {
                (Some(Value::Call(c)), _) => c.int("frames").map(|f| f.max(1) as u64),
                (None, Some(Value::Call(d))) if caption.is_some() => {
                    d.int("frames").map(|f| f.max(1) as u64)
                }
                _ => None,
            };
            let resolution = int(p, "resolution")
                .map(|r| r.max(0) as u64)
                .or_else(|| {
                    models
                        .iter()
                        .find(|m| m.role == Role::Vision)
                        .and_then(|m| m.config.int("image"))
                        .map(|r| r.max(0) as u64)
                })
                .unwrap_or(0);
            let (batch, steps, samples, work) = if caption.is_some() {
                let batch = int(p, "batch").map_or(16, |b| b.max(1) as u64);
                match data_size(data_val) {
                    Some((count, _)) => (
                        batch,
                        count.div_ceil(batch),
                        count,
                        format!("every clip of the data once ({count}), {batch} per batch"),
                    ),
                    // Files on the training machine: counted when read.
                    None => (
                        batch,
                        0,
                        0,
                        format!(
                            "every clip of the data once (counted at run time), {batch} per batch"
                        ),
                    ),
                }
            } else {
                let batch = int(p, "batch").map_or(1, |b| b.max(1) as u64);
                let (steps, work) = self.work(st, p, batch, data_val, problems);
                (batch, steps, steps.saturating_mul(batch), work)
            };
            let train: Vec<String> = model_list(field(p, "train"))
                .iter()
                .map(ModelRef::display)
                .collect();
            let frozen: Vec<String> = models
                .iter()
                .map(|m| m.name.clone())
                .filter(|n| !train.contains(n))
                .collect();
            let loss = match field(p, "loss").map(|v| &v.value) {
                Some(Value::Loss(terms)) => terms
                    .iter()
                    .map(|t| LossPlan {
                        weight: t.weight,
                        term: self.ctor(&t.term),
                    })
                    .collect(),
                _ => Vec::new(),
            };
            let regularize = match field(p, "regularize").map(|v| &v.value) {
                Some(Value::List(items)) => items
                    .iter()
                    .filter_map(|v| match &v.value {
                        Value::Call(c) => Some(self.ctor(c)),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            let precision = match field(p, "precision").map(|v| &v.value) {
                Some(Value::Call(c)) => c.ctor.name.to_string(),
                _ => "fp32".into(),
            };
            let optimizer = match field(p, "optimizer").map(|v| &v.value) {
                Some(Value::Call(c)) => Some(self.ctor(c)),
                _ => None,
            };
            phases.push(PhasePlan {
                name,
                resolution,
                batch,
                steps,
                samples,
                tokens_per_image: 0,
                train_flops: 0.0,
                work,
                first_step,
                frames,
                data,
                optimizer,
                lr: Vec::new(),
                loss,
                train,
                frozen,
                regularize,
                accumulate: int(p, "accumulate").map_or(1, |a| a.max(1) as u64),
                clip_grad: field(p, "clip_grad").and_then(Val::as_f64),
                precision,
                forward_flops_per_sample: 0.0,
                memory: Memory::default(),
            });
            first_step += steps;
        }
        let total = first_step;

        // Learning-rate segments: a phase's own `lr` covers the phase, the stage's covers
        // the whole stage.
        let stage_lr = st.field("lr").map(|f| schedule_list(&f.value));
        for (k, &p) in phase_ids.iter().enumerate() {
            let peak = phases[k]
                .optimizer
                .as_ref()
                .and_then(|o| o.float("lr"))
                .unwrap_or(0.0);
            let own = p.and_then(|i| st.phases[i].fields.iter().find(|f| f.name == "lr"));
            let (list, start, end) = match (own, &stage_lr) {
                (Some(f), _) => (
                    schedule_list(&f.value),
                    phases[k].first_step,
                    phases[k].first_step + phases[k].steps,
                ),
                (None, Some(list)) => (list.clone(), 0, total),
                (None, None) => (Vec::new(), 0, total),
            };
            let (lo, hi) = (phases[k].first_step, phases[k].first_step + phases[k].steps);
            phases[k].lr = segments(&list, start, end, peak)
                .into_iter()
                .filter(|s| s.start < hi.max(lo + 1) && s.end > lo)
                .collect();
        }

        let devices = int(None, "devices").map_or(1, |d| d.max(1) as u64);
        for ph in &mut phases {
            self.cost(ph, &models, &teachers, caption.is_some(), devices);
        }
        let train_flops = phases.iter().map(|p| p.train_flops).sum();
        let exports = st
            .exports
            .iter()
            .map(|b| ExportPlan {
                name: b.name.clone(),
                model: match &b.value.value {
                    Value::Model(r) => r.display(),
                    _ => String::new(),
                },
            })
            .collect();
        let mut plan = StagePlan {
            name: st.name.clone(),
            after,
            phases,
            train_flops,
            kind: if caption.is_some() {
                StageKind::Caption
            } else {
                StageKind::Train
            },
            init,
            seed: int(None, "seed").map_or(0, |s| s.max(0) as u64),
            devices,
            skip_nonfinite: int(None, "skip_nonfinite").map_or(0, |s| s.max(0) as u64),
            models,
            teachers,
            exports,
            caption: caption.map(|c| self.ctor(c)),
            writes: if caption.is_some() {
                vec!["captions".into()]
            } else {
                Vec::new()
            },
            hash: String::new(),
        };
        plan.hash = stage_hash(&plan, done);
        plan
    }

    /// Steps of a training phase, and how its unit of work became them.
    fn work(
        &self,
        st: &CheckedStage,
        p: Option<usize>,
        batch: u64,
        data: Option<&Val>,
        problems: &mut Problems,
    ) -> (u64, String) {
        let unit = |name: &str| st.field_in(p, name);
        if let Some(n) = unit("steps").and_then(|f| f.value.as_int()) {
            return (n.max(0) as u64, "steps".into());
        }
        if let Some(n) = unit("samples").and_then(|f| f.value.as_int()) {
            let n = n.max(0) as u64;
            let steps = n.div_ceil(batch);
            let work = if n.is_multiple_of(batch) {
                format!("{n} samples / batch {batch}")
            } else {
                format!(
                    "{n} samples / batch {batch}, rounded up: {} samples",
                    steps * batch
                )
            };
            return (steps, work);
        }
        if let Some(f) = unit("epochs") {
            let epochs = f.value.as_int().unwrap_or(0).max(0) as u64;
            match data_size(data) {
                Some((_, train)) => {
                    let n = epochs * train;
                    let steps = n.div_ceil(batch);
                    let rounded = if n.is_multiple_of(batch) {
                        ""
                    } else {
                        ", rounded up"
                    };
                    return (
                        steps,
                        format!("{epochs} epochs of {train} samples / batch {batch}{rounded}"),
                    );
                }
                None => {
                    let data_name = data.map_or("the data".into(), |d| match &d.value {
                        Value::Call(c) => c.ctor.name.to_string(),
                        Value::StageData { stage, name } => format!("{stage}.{name}"),
                        other => other.described(),
                    });
                    problems.push(
                        f.value.file,
                        Error::EpochsUnknownSize {
                            unit: "epochs".into(),
                            data: data_name,
                            span: f.value.span.into(),
                        },
                    );
                }
            }
        }
        (0, "no unit of work".into())
    }

    fn model(
        &self,
        r: &ModelRef,
        init_plan: Option<&StagePlan>,
        stage_models: &[ModelRef],
    ) -> Option<ModelPlan> {
        let call = self.checked.model_call(r)?;
        let mut config = self.ctor(call);
        // Another stage's projector reads that stage's tower.
        if let (ModelRef::StageOutput { stage, .. }, Some(Arg::Tap(t))) =
            (r, config.args.get_mut("input"))
        {
            if !t.model.contains('.') {
                t.model = format!("{stage}.{}", t.model);
            }
        }
        let name = r.display();
        let role = role(call)?;
        let init = match r {
            ModelRef::StageOutput { stage, name, .. } => ModelInit::Stage {
                stage: stage.clone(),
                model: name.clone(),
            },
            ModelRef::Def(_, n) => match init_plan.filter(|p| p.model(n).is_some()) {
                Some(p) => ModelInit::Stage {
                    stage: p.name.clone(),
                    model: n.clone(),
                },
                None => match config.str("weights") {
                    Some(path) => ModelInit::Weights { path: path.into() },
                    None => ModelInit::Random,
                },
            },
        };
        let params = match role {
            Role::Vision => cost::vit_params(&config),
            Role::Text => cost::text_params(&config),
            Role::Decoder => cost::decoder_params(&config),
            Role::Projector => {
                let input = self.projector_input(call, stage_models);
                let width = input
                    .and_then(|r| self.checked.model_call(&r))
                    .and_then(|c| c.int("width"))
                    .unwrap_or(0);
                cost::projector_params(&config, width.max(0) as u64)
            }
        };
        Some(ModelPlan {
            name,
            role,
            config,
            init,
            params,
        })
    }

    /// The tower a projector reads: its `input` tap's model, or the stage's first vision
    /// tower.
    fn projector_input(&self, call: &CallValue, stage_models: &[ModelRef]) -> Option<ModelRef> {
        if let Some(Value::Tap(t)) = call.arg("input").map(|v| &v.value) {
            return Some(t.model.clone());
        }
        stage_models
            .iter()
            .find(|r| {
                self.checked
                    .model_call(r)
                    .is_some_and(|c| c.has_tag(Tag::Vision))
            })
            .cloned()
    }

    fn teacher(
        &self,
        name: &str,
        v: &Val,
        init_plan: Option<&StagePlan>,
        done: &[StagePlan],
    ) -> TeacherPlan {
        let mut t = TeacherPlan {
            name: name.into(),
            kind: "frozen".into(),
            models: Vec::new(),
            block: None,
            args: None,
        };
        match &v.value {
            Value::Tap(tap) => {
                if let Some(m) = self.model(&tap.model, init_plan, &[]) {
                    let depth = m.config.int("depth").unwrap_or(0);
                    t.block = tap.block_index(depth).map(|b| b.max(0) as u64);
                    t.models.push(m);
                }
            }
            Value::Call(c) if c.ctor.name == "frozen" => {
                match c.arg("model").map(|m| &m.value) {
                    Some(Value::Model(r)) => t.models.extend(self.model(r, init_plan, &[])),
                    Some(Value::Stage(s)) => {
                        // The whole CLIP a stage trained: its vision and text towers.
                        if let Some(sp) = done.iter().find(|d| &d.name == s) {
                            for m in &sp.models {
                                let trained = sp.phases.iter().any(|p| p.train.contains(&m.name));
                                if trained && matches!(m.role, Role::Vision | Role::Text) {
                                    t.models.push(ModelPlan {
                                        name: format!("{s}.{}", m.name),
                                        init: ModelInit::Stage {
                                            stage: s.clone(),
                                            model: m.name.clone(),
                                        },
                                        ..m.clone()
                                    });
                                }
                            }
                        }
                    }
                    _ => {}
                }
                if let Some(Value::Model(r)) = c.arg("text").map(|m| &m.value) {
                    t.models.extend(self.model(r, init_plan, &[]));
                }
            }
            Value::Call(c) => {
                t.kind = c.ctor.name.into();
                t.args = Some(self.ctor(c));
            }
            _ => {}
        }
        t
    }

    /// Fills a phase's cost and memory estimate.
    fn cost(
        &self,
        ph: &mut PhasePlan,
        models: &[ModelPlan],
        teachers: &[TeacherPlan],
        caption: bool,
        devices: u64,
    ) {
        let terms: Vec<&str> = ph.loss.iter().map(|l| l.term.ctor.as_str()).collect();
        let embeds = caption
            || terms
                .iter()
                .any(|t| matches!(*t, "clip" | "siglip" | "distill_kl"));
        let frames = ph.frames.unwrap_or(1);
        let res = ph.resolution;

        // Blocks each vision tower must run: taps of losses and projectors.
        let mut needed: IndexMap<String, u64> = IndexMap::new();
        let mut need = |name: &str, blocks: u64| {
            let e = needed.entry(name.to_string()).or_insert(0);
            *e = (*e).max(blocks);
        };
        for l in &ph.loss {
            for a in l.term.args.values() {
                if let Arg::Tap(t) = a {
                    need(&t.model, t.block + 1);
                }
            }
        }
        for m in models.iter().filter(|m| m.role == Role::Projector) {
            if let Some(Arg::Tap(t)) = m.config.arg("input") {
                need(&t.model, t.block + 1);
            }
        }
        let running: Vec<Running> = models
            .iter()
            .filter(|m| caption || ph.train.contains(&m.name) || ph.frozen.contains(&m.name))
            .map(|m| {
                let depth = m.config.int("depth").unwrap_or(0).max(0) as u64;
                let blocks = if embeds || terms.contains(&"mask_regularization") {
                    depth
                } else {
                    needed
                        .get(m.name.as_str())
                        .copied()
                        .unwrap_or(depth)
                        .min(depth)
                };
                Running {
                    model: m,
                    trained: ph.train.contains(&m.name),
                    blocks,
                    head: embeds,
                }
            })
            .collect();

        let vision_of = |name: &str| models.iter().find(|m| m.name == name);
        ph.tokens_per_image = running
            .iter()
            .find(|r| r.model.role == Role::Vision)
            .map(|r| cost::vit_tokens(&r.model.config, res))
            .or_else(|| {
                teachers
                    .iter()
                    .flat_map(|t| &t.models)
                    .find(|m| m.role == Role::Vision)
                    .map(|m| cost::vit_tokens(&m.config, res))
            })
            .unwrap_or(0);

        let (mut forward, mut train, mut act) = (0.0, 0.0, 0.0);
        let (mut params, mut trainable) = (0u64, 0u64);
        let mut frozen_params = 0u64;
        let mut vision_trained = (0.0, 0.0);
        for r in &running {
            let cfg = &r.model.config;
            let (f, a) = match r.model.role {
                Role::Vision => (
                    cost::vit_forward(cfg, res, r.blocks, r.head) * frames as f64,
                    cost::vit_activations(cfg, res, r.blocks) * frames as f64,
                ),
                Role::Text => (cost::text_forward(cfg), cost::text_activations(cfg)),
                Role::Projector => {
                    let (input, tokens) = projector_source(cfg, models, res, &vision_of);
                    (
                        cost::projector_forward(cfg, input, tokens * frames),
                        cost::projector_activations(cfg, input, tokens * frames),
                    )
                }
                Role::Decoder => {
                    let prefix = models
                        .iter()
                        .find(|m| m.role == Role::Projector)
                        .map_or(0, |p| {
                            projector_source(&p.config, models, res, &vision_of).1
                        })
                        * frames;
                    (
                        cost::decoder_forward(cfg, prefix),
                        cost::decoder_activations(cfg, prefix),
                    )
                }
            };
            forward += f;
            params += r.model.params;
            if r.trained {
                train += 3.0 * f;
                act += a;
                trainable += r.model.params;
                if r.model.role == Role::Vision {
                    vision_trained.0 += f;
                    vision_trained.1 += a;
                }
            } else {
                train += f;
                frozen_params += r.model.params;
            }
        }
        // Masked copies run the trained towers again, forward and backward.
        for l in &ph.loss {
            if l.term.ctor == "mask_regularization" {
                let fraction = l.term.float("fraction").unwrap_or(0.0);
                forward += fraction * vision_trained.0;
                train += fraction * 3.0 * vision_trained.0;
                act += fraction * vision_trained.1;
            }
        }
        // Teachers the loss reads run forward only.
        let used: Vec<&str> = ph
            .loss
            .iter()
            .flat_map(|l| l.term.args.values())
            .filter_map(|a| match a {
                Arg::Teacher { teacher } => Some(teacher.as_str()),
                _ => None,
            })
            .collect();
        for t in teachers.iter().filter(|t| used.contains(&t.name.as_str())) {
            for m in &t.models {
                let depth = m.config.int("depth").unwrap_or(0).max(0) as u64;
                let f = match m.role {
                    Role::Vision => {
                        let blocks = t.block.map_or(depth, |b| b + 1);
                        cost::vit_forward(&m.config, res, blocks, t.block.is_none() && embeds)
                            * frames as f64
                    }
                    Role::Text => cost::text_forward(&m.config),
                    _ => 0.0,
                };
                forward += f;
                train += f;
                params += m.params;
                frozen_params += m.params;
            }
        }

        ph.forward_flops_per_sample = forward;
        ph.train_flops = if caption {
            forward * ph.samples as f64
        } else {
            train * ph.samples as f64
        };
        let micro = (ph.batch / devices.max(1) / ph.accumulate.max(1)).max(1);
        let bytes = |param_bytes: f64, act_bytes: f64| {
            let mut b = MemoryBytes {
                params: param_bytes,
                grads: 4.0 * trainable as f64,
                optimizer: if caption { 0.0 } else { 8.0 * trainable as f64 },
                activations_per_sample: act * act_bytes,
                activations: 0.0,
                total: 0.0,
            };
            b.activations = b.activations_per_sample * micro as f64;
            b.total = b.params + b.grads + b.optimizer + b.activations;
            b
        };
        ph.memory = Memory {
            params,
            trainable,
            micro_batch: micro,
            fp32: bytes(4.0 * params as f64, 4.0),
            bf16: bytes(6.0 * trainable as f64 + 2.0 * frozen_params as f64, 2.0),
        };
    }

    /// A constructor call in plan form.
    fn ctor(&self, c: &CallValue) -> Ctor {
        let mut args = IndexMap::new();
        for (name, v) in &c.args {
            let ty = c.ctor.param(name).map(|p| p.ty);
            args.insert(name.to_string(), self.arg(v, ty.as_ref()));
        }
        Ctor {
            ctor: c.ctor.name.into(),
            args,
        }
    }

    fn arg(&self, v: &Val, ty: Option<&Ty>) -> Arg {
        match &v.value {
            Value::Int(i) => Arg::Int(*i),
            Value::Float(f) => Arg::Float(*f),
            Value::Frac(n, 1) => Arg::Int(*n),
            Value::Frac(n, d) => Arg::Float(*n as f64 / *d as f64),
            Value::Str(s) if ty == Some(&Ty::Path) => Arg::Str(self.path(v.file, s)),
            Value::Str(s) => Arg::Str(s.clone()),
            Value::Bool(b) => Arg::Bool(*b),
            Value::List(items) | Value::Tuple(items) => {
                let inner = match ty {
                    Some(Ty::List(t)) => Some(*t),
                    _ => None,
                };
                Arg::List(items.iter().map(|i| self.arg(i, inner)).collect())
            }
            Value::Record(fields) => Arg::Record(
                fields
                    .iter()
                    .map(|(n, v)| (n.clone(), self.arg(v, None)))
                    .collect(),
            ),
            Value::Call(c) => Arg::Call(self.ctor(c)),
            Value::Model(r) => Arg::Model { model: r.display() },
            Value::Stage(s) => Arg::Model { model: s.clone() },
            Value::StageData { stage, name } => Arg::Str(format!("{stage}.{name}")),
            Value::Tap(t) => {
                let depth = self
                    .checked
                    .model_call(&t.model)
                    .and_then(|c| c.int("depth"))
                    .unwrap_or(0);
                Arg::Tap(TapPlan {
                    model: t.model.display(),
                    block: t.block_index(depth).unwrap_or(0).max(0) as u64,
                    frozen: t.frozen,
                })
            }
            Value::Teacher(t) => Arg::Teacher { teacher: t.clone() },
            Value::Loss(_) | Value::Invalid => Arg::Str(String::new()),
        }
    }

    /// A path relative to the file that wrote it. `"synthetic"` (mask logits from the
    /// generator) is not a path.
    fn path(&self, file: FileId, s: &str) -> String {
        if s == "synthetic" {
            return s.into();
        }
        match &self.checked.loaded.sources.get(file).origin {
            Origin::Path(p) => {
                let dir = p.parent().unwrap_or(Path::new(""));
                dir.join(s).to_string_lossy().into_owned()
            }
            Origin::Std(_) | Origin::Set(_) => s.into(),
        }
    }
}

/// The input width and tokens per image of a projector.
fn projector_source<'m>(
    cfg: &Ctor,
    models: &'m [ModelPlan],
    res: u64,
    vision_of: &dyn Fn(&str) -> Option<&'m ModelPlan>,
) -> (u64, u64) {
    let tower = match cfg.arg("input") {
        Some(Arg::Tap(t)) => vision_of(&t.model),
        _ => models.iter().find(|m| m.role == Role::Vision),
    };
    tower.map_or((0, 0), |m| {
        (
            m.config.int("width").unwrap_or(0).max(0) as u64,
            cost::vit_tokens(&m.config, res),
        )
    })
}

/// A model that `owner` refers to, seen from the stage that uses `owner`: when `owner` is
/// another stage's model, so is the model it refers to.
fn relative_to(owner: &ModelRef, r: &ModelRef) -> ModelRef {
    match (owner, r) {
        (ModelRef::StageOutput { stage, .. }, ModelRef::Def(id, name)) => ModelRef::StageOutput {
            stage: stage.clone(),
            name: name.clone(),
            def: Some(*id),
        },
        _ => r.clone(),
    }
}

fn role(c: &CallValue) -> Option<Role> {
    if c.has_tag(Tag::Vision) {
        Some(Role::Vision)
    } else if c.has_tag(Tag::TextEncoder) {
        Some(Role::Text)
    } else if c.has_tag(Tag::Decoder) {
        Some(Role::Decoder)
    } else if c.has_tag(Tag::Projector) {
        Some(Role::Projector)
    } else {
        None
    }
}

fn model_list(v: Option<&Val>) -> Vec<ModelRef> {
    match v.map(|v| &v.value) {
        Some(Value::List(items)) => items
            .iter()
            .filter_map(|i| match &i.value {
                Value::Model(r) => Some(r.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The total size and training size of generated data.
fn data_size(v: Option<&Val>) -> Option<(u64, u64)> {
    let Value::Call(c) = &v?.value else {
        return None;
    };
    if !matches!(c.ctor.name, "synthetic_shapes" | "synthetic_video") {
        return None;
    }
    let count = c.int("count")?.max(0) as u64;
    let held_out = c.arg("held_out").and_then(Val::as_f64).unwrap_or(0.0);
    let held = (count as f64 * held_out).round() as u64;
    Some((count, count.saturating_sub(held)))
}

/// One schedule segment as written: (shape, steps, final fraction of the peak).
#[derive(Clone, Debug)]
struct Segment {
    shape: String,
    steps: Option<u64>,
    final_frac: f64,
}

fn schedule_list(v: &Val) -> Vec<Segment> {
    let Value::List(items) = &v.value else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|i| match &i.value {
            Value::Call(c) => Some(Segment {
                shape: c.ctor.name.into(),
                steps: c.int("steps").map(|s| s.max(0) as u64),
                final_frac: c.arg("final").and_then(Val::as_f64).unwrap_or(1.0),
            }),
            _ => None,
        })
        .collect()
}

/// Schedule segments over steps `start..end` with peak rate `peak`.
fn segments(list: &[Segment], start: u64, end: u64, peak: f64) -> Vec<LrSegment> {
    if list.is_empty() {
        return vec![LrSegment {
            shape: "constant".into(),
            start,
            end,
            from: peak,
            to: peak,
        }];
    }
    let span = end.saturating_sub(start);
    let fixed: u64 = list.iter().filter_map(|s| s.steps).sum();
    let open = list.iter().filter(|s| s.steps.is_none()).count() as u64;
    let rest = span.saturating_sub(fixed);
    let mut out = Vec::new();
    let (mut at, mut level, mut open_seen) = (start, peak, 0u64);
    for s in list {
        let len = match s.steps {
            Some(n) => n,
            None => {
                open_seen += 1;
                // The last open segment takes the remainder of the division.
                if open_seen == open {
                    rest - rest / open * (open - 1)
                } else {
                    rest / open
                }
            }
        };
        let (from, to) = match s.shape.as_str() {
            "warmup" => (0.0, peak),
            "constant" => (peak, peak),
            _ => (level, peak * s.final_frac),
        };
        out.push(LrSegment {
            shape: s.shape.clone(),
            start: at,
            end: at + len,
            from,
            to,
        });
        at += len;
        level = to;
    }
    out
}

/// SHA-256 of the stage's plan without its costs, after the hashes of its dependencies.
fn stage_hash(stage: &StagePlan, done: &[StagePlan]) -> String {
    let mut value = serde_json::to_value(stage).unwrap_or_default();
    strip_costs(&mut value);
    let mut h = Sha256::new();
    for dep in &stage.after {
        if let Some(d) = done.iter().find(|d| &d.name == dep) {
            h.update(d.name.as_bytes());
            h.update(b"=");
            h.update(d.hash.as_bytes());
            h.update(b"\n");
        }
    }
    h.update(value.to_string().as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Removes what the cost model derives (it may change without changing a result).
fn strip_costs(v: &mut serde_json::Value) {
    const DERIVED: &[&str] = &[
        "hash",
        "train_flops",
        "forward_flops_per_sample",
        "memory",
        "tokens_per_image",
        "params",
    ];
    match v {
        serde_json::Value::Object(obj) => {
            for k in DERIVED {
                obj.remove(*k);
            }
            obj.values_mut().for_each(strip_costs);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_costs),
        _ => {}
    }
}
