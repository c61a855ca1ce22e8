//! The checker: evaluates every definition and stage of the root file against the
//! catalogue (types, defaults, constraints), runs the checks of language.md section 2, and
//! produces the checked program that lowering consumes. Errors accumulate; an expression
//! with an error evaluates to `Value::Invalid`, which later checks accept silently.

mod eval;
pub mod set;
mod stage;
pub mod suggest;
pub mod value;

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use crate::diagnostic::{Error, Problems};
use crate::graph::StageGraph;
use crate::resolve::Loaded;
use crate::source::{FileId, Span};
use crate::syntax::ast::{self, DefKind, Item};
pub use value::*;

/// The checker's maps, keyed by names it looks up at every use: a fast non-cryptographic
/// hash (the multiply-rotate hash of rustc's FxHasher) instead of SipHash. Nothing depends
/// on iteration order (SipHash's is random per run).
pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;
pub(crate) type FastSet<K> = HashSet<K, BuildHasherDefault<FxHasher>>;

#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(c);
            self.add(u64::from_le_bytes(word));
        }
        for &b in chunks.remainder() {
            self.add(u64::from(b));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

/// A definition and its evaluated value.
#[derive(Debug, Clone)]
pub struct CheckedDef {
    pub file: FileId,
    pub kind: DefKind,
    pub name: String,
    pub name_span: Span,
    pub doc: Option<String>,
    /// `None` until evaluated; `Value::Invalid` after an error.
    pub value: Option<Val>,
}

/// A stage field as written, evaluated.
#[derive(Debug, Clone)]
pub struct FieldVal {
    pub name: &'static str,
    pub name_span: Span,
    pub value: Val,
}

#[derive(Debug, Clone)]
pub struct CheckedPhase {
    pub name: String,
    pub span: Span,
    pub fields: Vec<FieldVal>,
}

#[derive(Debug, Clone)]
pub struct Binding {
    pub name: String,
    pub name_span: Span,
    pub value: Val,
}

/// A stage of the root file, evaluated. Phases hold only what they set; the effective value
/// of a field in a phase is `CheckedStage::field_in`.
#[derive(Debug, Clone)]
pub struct CheckedStage {
    pub name: String,
    pub name_span: Span,
    pub span: Span,
    pub doc: Option<String>,
    pub fields: Vec<FieldVal>,
    pub phases: Vec<CheckedPhase>,
    pub teachers: Vec<Binding>,
    pub exports: Vec<Binding>,
}

impl CheckedStage {
    pub fn field(&self, name: &str) -> Option<&FieldVal> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The value of `name` in phase `phase` (index), inherited from the stage when the
    /// phase does not set it. Units of work are inherited as a group.
    pub fn field_in(&self, phase: Option<usize>, name: &str) -> Option<&FieldVal> {
        let Some(p) = phase.and_then(|i| self.phases.get(i)) else {
            return self.field(name);
        };
        if let Some(f) = p.fields.iter().find(|f| f.name == name) {
            return Some(f);
        }
        let is_unit = pexc_stdlib::UNITS.contains(&name);
        if is_unit
            && p.fields
                .iter()
                .any(|f| pexc_stdlib::UNITS.contains(&f.name))
        {
            return None;
        }
        self.field(name)
    }
}

/// The checked program: what `pexc check` validates and lowering consumes.
#[derive(Debug, Clone)]
pub struct Checked {
    pub loaded: Loaded,
    pub defs: Vec<CheckedDef>,
    pub stages: Vec<CheckedStage>,
    pub graph: StageGraph,
}

impl Checked {
    pub fn def(&self, id: DefId) -> &CheckedDef {
        &self.defs[id.0]
    }

    /// The constructor call behind a model reference, following aliases.
    pub fn model_call(&self, r: &ModelRef) -> Option<&CallValue> {
        model_call(&self.defs, r).map(|c| &**c)
    }
}

pub(crate) fn model_call<'d>(
    defs: &'d [CheckedDef],
    r: &ModelRef,
) -> Option<&'d std::sync::Arc<CallValue>> {
    let mut id = r.def()?;
    for _ in 0..defs.len() + 1 {
        match &defs[id.0].value.as_ref()?.value {
            Value::Call(c) => return Some(c),
            Value::Model(next) => id = next.def()?,
            _ => return None,
        }
    }
    None
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DefState {
    Unvisited,
    InProgress,
    Done,
}

/// What a name in a module's scope stands for.
#[derive(Debug, Clone, Copy)]
enum Entry {
    Def(DefId),
    Import(usize),
}

#[derive(Debug, Clone)]
struct ImportInfo {
    file: FileId,
    local: String,
    span: Span,
    target: Option<DefId>,
    used: bool,
}

/// A root-file stage as the checker first sees it: what it produces, known before any
/// stage is evaluated so that references in any order resolve.
#[derive(Debug, Clone)]
struct StageSyn {
    name: String,
    span: Span,
    /// Model names it trains (any phase) and its exports, with the declaration they name,
    /// and the datasets it writes.
    produces: Vec<(String, Produced)>,
}

#[derive(Debug, Clone, PartialEq)]
enum Produced {
    /// A model, declared by the named definition when it is one.
    Model(Option<String>),
    /// A dataset.
    Data,
}

/// The evaluation context of an expression.
#[derive(Clone, Copy)]
struct Cx<'t> {
    file: FileId,
    /// The stage being checked (index into `stage_syn`), for DAG edges.
    stage: Option<usize>,
    teachers: Option<&'t FastMap<String, Val>>,
}

pub(crate) struct Checker<'a> {
    loaded: &'a Loaded,
    problems: &'a mut Problems,
    defs: Vec<CheckedDef>,
    def_exprs: Vec<&'a ast::Expr>,
    def_state: Vec<DefState>,
    def_used: Vec<bool>,
    /// Definitions being evaluated, innermost last: the path of a definition cycle.
    def_stack: Vec<DefId>,
    scopes: FastMap<FileId, FastMap<String, Entry>>,
    imports: Vec<ImportInfo>,
    prelude: FastMap<String, DefId>,
    stage_syn: Vec<StageSyn>,
    /// Stage name -> index in `stage_syn`.
    stage_index: FastMap<String, usize>,
    /// (from stage, to stage, span in the root file): `from` refers to `to`.
    edges: Vec<(usize, usize, Span)>,
    /// `--set` overrides, and whether each found its target.
    overrides: Vec<set::Override>,
    override_done: Vec<bool>,
}

/// Checks a loaded program. Diagnostics go to `problems`.
pub fn check(loaded: Loaded, problems: &mut Problems) -> Checked {
    check_with(loaded, Vec::new(), problems)
}

/// Checks a loaded program with `--set` overrides applied.
pub fn check_with(
    loaded: Loaded,
    overrides: Vec<set::Override>,
    problems: &mut Problems,
) -> Checked {
    let (defs, stages, graph) = {
        let mut checker = Checker::new(&loaded, problems);
        checker.override_done = vec![false; overrides.len()];
        checker.overrides = overrides;
        checker.collect();
        // An override's value is read in the root file's scope.
        if let Some(root_scope) = checker.scopes.get(&loaded.root).cloned() {
            for o in &checker.overrides {
                checker.scopes.insert(o.file, root_scope.clone());
            }
        }
        checker.evaluate_defs();
        let stages = checker.check_stages();
        checker.report_unapplied_overrides();
        checker.warn_unused();
        let graph = StageGraph::build(
            checker
                .stage_syn
                .iter()
                .map(|s| (s.name.clone(), s.span))
                .collect(),
            &checker.edges,
            loaded.root,
            checker.problems,
        );
        (checker.defs, stages, graph)
    };
    Checked {
        loaded,
        defs,
        stages,
        graph,
    }
}

impl<'a> Checker<'a> {
    fn new(loaded: &'a Loaded, problems: &'a mut Problems) -> Self {
        Checker {
            loaded,
            problems,
            defs: Vec::new(),
            def_exprs: Vec::new(),
            def_state: Vec::new(),
            def_used: Vec::new(),
            def_stack: Vec::new(),
            scopes: FastMap::default(),
            imports: Vec::new(),
            prelude: FastMap::default(),
            stage_syn: Vec::new(),
            stage_index: FastMap::default(),
            edges: Vec::new(),
            overrides: Vec::new(),
            override_done: Vec::new(),
        }
    }

    fn err(&mut self, file: FileId, e: Error) {
        self.problems.push(file, e);
    }

    /// Builds every module's scope: its definitions, then its imports; the root file's
    /// stages; the prelude.
    fn collect(&mut self) {
        let loaded = self.loaded;
        // Definitions first, so that imports can find them in any module order.
        for module in &loaded.modules {
            let Some(ast) = &module.ast else { continue };
            let mut scope: FastMap<String, Entry> = FastMap::default();
            let mut first: FastMap<String, Span> = FastMap::default();
            for item in &ast.items {
                let (name, span) = match item {
                    Item::Def(d) => (&d.name.name, d.name.span),
                    Item::Stage(s) => (&s.name.name, s.name.span),
                    Item::Use(_) => continue,
                };
                if let Some(prev) = first.get(name) {
                    self.err(
                        module.file,
                        Error::Duplicate {
                            name: name.clone(),
                            span: span.into(),
                            first: (*prev).into(),
                        },
                    );
                    continue;
                }
                first.insert(name.clone(), span);
                if let Item::Def(d) = item {
                    let id = DefId(self.defs.len());
                    self.defs.push(CheckedDef {
                        file: module.file,
                        kind: d.kind,
                        name: d.name.name.clone(),
                        name_span: d.name.span,
                        doc: d.doc.clone(),
                        value: None,
                    });
                    self.def_exprs.push(&d.value);
                    self.def_state.push(DefState::Unvisited);
                    self.def_used.push(false);
                    scope.insert(name.clone(), Entry::Def(id));
                }
            }
            self.scopes.insert(module.file, scope);
            if module.file == loaded.root {
                for item in &ast.items {
                    if let Item::Stage(s) = item {
                        if self.stage_index.contains_key(&s.name.name) {
                            continue;
                        }
                        self.stage_index
                            .insert(s.name.name.clone(), self.stage_syn.len());
                        self.stage_syn.push(StageSyn {
                            name: s.name.name.clone(),
                            span: s.name.span,
                            produces: produced_names(s),
                        });
                    }
                }
            }
        }
        // Imports.
        for module in &loaded.modules {
            let Some(ast) = &module.ast else { continue };
            let uses = ast.items.iter().filter_map(|i| match i {
                Item::Use(u) => Some(u),
                _ => None,
            });
            for (u, target) in uses.zip(module.uses.iter()) {
                for imp in &u.imports {
                    let target_def =
                        target.and_then(|t| self.resolve_import(module.file, t, &imp.name));
                    let local = imp.local();
                    let scope = self.scopes.entry(module.file).or_default();
                    if let Some(existing) = scope.get(&local.name).copied() {
                        let first = match existing {
                            Entry::Def(d) => self.defs[d.0].name_span,
                            Entry::Import(i) => self.imports[i].span,
                        };
                        self.problems.push(
                            module.file,
                            Error::Duplicate {
                                name: local.name.clone(),
                                span: local.span.into(),
                                first: first.into(),
                            },
                        );
                        continue;
                    }
                    let index = self.imports.len();
                    self.imports.push(ImportInfo {
                        file: module.file,
                        local: local.name.clone(),
                        span: local.span,
                        target: target_def,
                        // An import that failed to resolve already has its diagnostic.
                        used: target_def.is_none(),
                    });
                    self.scopes
                        .entry(module.file)
                        .or_default()
                        .insert(local.name.clone(), Entry::Import(index));
                }
            }
        }
        for &p in &loaded.prelude {
            if let Some(scope) = self.scopes.get(&p) {
                for (name, entry) in scope {
                    if let Entry::Def(d) = entry {
                        self.prelude.insert(name.clone(), *d);
                    }
                }
            }
        }
    }

    /// The definition `name` of module `target`, or a diagnostic at the import.
    fn resolve_import(&mut self, file: FileId, target: FileId, name: &ast::Ident) -> Option<DefId> {
        let module_name = self.loaded.sources.get(target).name.clone();
        let target_ast = self.loaded.module(target).ast.as_ref()?;
        if let Some(Entry::Def(d)) = self.scopes.get(&target).and_then(|s| s.get(&name.name)) {
            return Some(*d);
        }
        let is_stage = target_ast
            .items
            .iter()
            .any(|i| matches!(i, Item::Stage(s) if s.name.name == name.name));
        if is_stage {
            self.err(
                file,
                Error::StageImport {
                    name: name.name.clone(),
                    span: name.span.into(),
                    module: module_name,
                },
            );
            return None;
        }
        let defined: Vec<&str> = target_ast
            .items
            .iter()
            .filter_map(|i| match i {
                Item::Def(d) => Some(d.name.name.as_str()),
                _ => None,
            })
            .collect();
        let help = match suggest::closest(&name.name, defined.iter().copied()) {
            Some(c) => Some(format!(
                "did you mean `{c}`? `{module_name}` defines: {}",
                list_names(&defined)
            )),
            None if defined.is_empty() => Some(format!("`{module_name}` defines nothing")),
            None => Some(format!("`{module_name}` defines: {}", list_names(&defined))),
        };
        self.err(
            file,
            Error::NotExported {
                name: name.name.clone(),
                module: module_name,
                span: name.span.into(),
                help,
            },
        );
        None
    }

    /// The definition a name of the root file stands for (its own, imported, or prelude).
    fn root_def(&self, name: &str) -> Option<DefId> {
        match self.scopes.get(&self.loaded.root).and_then(|s| s.get(name)) {
            Some(Entry::Def(d)) => Some(*d),
            Some(Entry::Import(i)) => self.imports[*i].target,
            None => self.prelude.get(name).copied(),
        }
    }

    fn evaluate_defs(&mut self) {
        for i in 0..self.defs.len() {
            self.visit_def(DefId(i));
        }
    }

    /// Warnings for definitions and imports of the root file that nothing uses. Library
    /// files (no stages) define things for others: no warnings there.
    fn warn_unused(&mut self) {
        let root = self.loaded.root;
        if self.stage_syn.is_empty() {
            return;
        }
        for (i, d) in self.defs.iter().enumerate() {
            if d.file == root && !self.def_used[i] {
                self.problems.push(
                    root,
                    Error::Unused {
                        name: d.name.clone(),
                        span: d.name_span.into(),
                        what: d.kind.keyword().replace("let", "constant"),
                    },
                );
            }
        }
        for imp in &self.imports {
            if imp.file == root && !imp.used {
                self.problems.push(
                    root,
                    Error::Unused {
                        name: imp.local.clone(),
                        span: imp.span.into(),
                        what: "import".into(),
                    },
                );
            }
        }
    }
}

/// "a, b, c" (the first 12)
pub(crate) fn list_names(names: &[&str]) -> String {
    let mut shown: Vec<String> = names.iter().take(12).map(|n| format!("`{n}`")).collect();
    if names.len() > 12 {
        shown.push(format!("and {} more", names.len() - 12));
    }
    shown.join(", ")
}

/// The models a stage trains (any phase) and exports, read from its syntax.
fn produced_names(s: &ast::Stage) -> Vec<(String, Produced)> {
    let mut out: Vec<(String, Produced)> = Vec::new();
    let mut add_train = |f: &ast::Field| {
        if f.name.name != "train" {
            return;
        }
        let items: Vec<&ast::Expr> = match &f.value.kind {
            ast::ExprKind::List(items) => items.iter().collect(),
            _ => vec![&f.value],
        };
        for e in items {
            if let ast::ExprKind::Name(n) = &e.kind {
                if !out.iter().any(|(x, _)| x == n) {
                    out.push((n.clone(), Produced::Model(Some(n.clone()))));
                }
            }
        }
    };
    for item in &s.items {
        match item {
            ast::StageItem::Field(f) => add_train(f),
            ast::StageItem::Phase(p) => p.fields.iter().for_each(&mut add_train),
            _ => {}
        }
    }
    for item in &s.items {
        if let ast::StageItem::Export(b) = item {
            let target = match &b.value.kind {
                ast::ExprKind::Name(n) => Some(n.clone()),
                _ => None,
            };
            out.push((b.name.name.clone(), Produced::Model(target)));
        }
        if let ast::StageItem::Field(f) = item {
            if f.name.name == "caption" {
                out.push(("captions".into(), Produced::Data));
            }
        }
    }
    out
}
