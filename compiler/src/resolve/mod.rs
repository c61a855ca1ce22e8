//! Modules: loading the root file and everything it imports (`use std::..` from the
//! embedded standard library, `use "path.pex"` relative to the importing file), with
//! missing files, unknown std modules and import cycles diagnosed at the `use`.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use pexc_stdlib::{std_module, PRELUDE, STD_MODULES};

use crate::check::suggest;
use crate::diagnostic::{Error, Problems};
use crate::source::{FileId, Origin, SourceFile, SourceMap, Span};
use crate::syntax::ast::{Item, Module, ModuleSource};
use crate::syntax::parse_module;

/// Reads files: the file system, or memory in tests and fuzzing.
pub trait Loader {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
}

/// Reads from the file system.
pub struct FsLoader;

impl Loader for FsLoader {
    /// Reads at most one byte more than `MAX_FILE_BYTES`, so that a huge file (or
    /// `/dev/zero`) becomes a "file too large" diagnostic, not an exhausted memory.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        use std::io::Read;
        if path.is_dir() {
            return Err(io::Error::other("is a directory"));
        }
        let file = std::fs::File::open(path)?;
        let mut bytes = Vec::new();
        file.take(crate::syntax::MAX_FILE_BYTES as u64 + 1)
            .read_to_end(&mut bytes)?;
        Ok(bytes)
    }
}

/// Reads from a map of paths to contents.
#[derive(Default)]
pub struct MemLoader {
    pub files: HashMap<PathBuf, Vec<u8>>,
}

impl Loader for MemLoader {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))
    }
}

/// One loaded file. Module ids equal file ids.
#[derive(Debug, Clone)]
pub struct LoadedModule {
    pub file: FileId,
    /// `None` when the file did not parse (its syntax error is among the problems).
    pub ast: Option<Module>,
    /// For each `use` item, in order: the module it resolved to.
    pub uses: Vec<Option<FileId>>,
}

/// The root file and the closure of its imports, plus the prelude.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub sources: SourceMap,
    pub modules: Vec<LoadedModule>,
    pub root: FileId,
    pub prelude: Vec<FileId>,
}

impl Loaded {
    pub fn module(&self, id: FileId) -> &LoadedModule {
        &self.modules[id.0]
    }
}

/// Loads `path` and its imports. An unreadable root is an I/O error (exit 2 at the CLI);
/// every other problem is a diagnostic.
pub fn load(
    path: &Path,
    display: &str,
    loader: &dyn Loader,
    problems: &mut Problems,
) -> io::Result<Loaded> {
    let bytes = loader.read(path)?;
    let mut state = State {
        sources: SourceMap::default(),
        modules: Vec::new(),
        loader,
        stack: Vec::new(),
    };
    let root = state.add_file(
        display.to_string(),
        Origin::Path(path.to_path_buf()),
        bytes,
        problems,
    );
    state.load_imports(root, problems);
    let mut prelude = Vec::new();
    for name in PRELUDE {
        let source = std_module(name).expect("prelude modules exist");
        let origin = Origin::Std(name.to_string());
        let id = match state.sources.find(&origin) {
            Some(id) => id,
            None => {
                let id = state.add_file(
                    std_display(name),
                    origin,
                    source.as_bytes().to_vec(),
                    problems,
                );
                state.load_imports(id, problems);
                id
            }
        };
        prelude.push(id);
    }
    Ok(Loaded {
        sources: state.sources,
        modules: state.modules,
        root,
        prelude,
    })
}

/// `std::pe` -> `std/pe.pex`
fn std_display(path: &str) -> String {
    format!("{}.pex", path.replace("::", "/"))
}

struct State<'a> {
    sources: SourceMap,
    modules: Vec<LoadedModule>,
    loader: &'a dyn Loader,
    /// Files being loaded, for cycle detection.
    stack: Vec<FileId>,
}

impl State<'_> {
    fn add_file(
        &mut self,
        name: String,
        origin: Origin,
        bytes: Vec<u8>,
        problems: &mut Problems,
    ) -> FileId {
        // Too large: refused before decoding (a cut file may end inside a character).
        if bytes.len() > crate::syntax::MAX_FILE_BYTES {
            let id = self
                .sources
                .add(SourceFile::new(name, origin, String::new()));
            problems.push(
                id,
                Error::FileTooLarge {
                    bytes: bytes.len(),
                    limit: crate::syntax::MAX_FILE_BYTES,
                    span: Span::new(0, 0).into(),
                },
            );
            self.modules.push(LoadedModule {
                file: id,
                ast: None,
                uses: Vec::new(),
            });
            return id;
        }
        let (text, utf8_error) = match String::from_utf8(bytes) {
            Ok(t) => (t, None),
            Err(e) => {
                let offset = e.utf8_error().valid_up_to();
                let byte = e.as_bytes()[offset];
                (
                    String::from_utf8_lossy(e.as_bytes()).into_owned(),
                    Some((offset, byte)),
                )
            }
        };
        let id = self.sources.add(SourceFile::new(name, origin, text));
        let ast = match utf8_error {
            Some((offset, byte)) => {
                problems.push(
                    id,
                    Error::NotUtf8 {
                        byte,
                        offset,
                        span: Span::new(offset, offset + 1).into(),
                    },
                );
                None
            }
            None => match parse_module(&self.sources.get(id).text) {
                Ok(m) => Some(m),
                Err(e) => {
                    problems.push(id, *e);
                    None
                }
            },
        };
        self.modules.push(LoadedModule {
            file: id,
            ast,
            uses: Vec::new(),
        });
        id
    }

    fn load_imports(&mut self, id: FileId, problems: &mut Problems) {
        self.stack.push(id);
        let uses: Vec<(ModuleSource, Span)> = match &self.modules[id.0].ast {
            Some(ast) => ast
                .items
                .iter()
                .filter_map(|i| match i {
                    Item::Use(u) => Some((u.source.clone(), u.source_span)),
                    _ => None,
                })
                .collect(),
            None => Vec::new(),
        };
        let mut resolved = Vec::new();
        for (source, span) in uses {
            resolved.push(self.resolve_use(id, &source, span, problems));
        }
        self.modules[id.0].uses = resolved;
        self.stack.pop();
    }

    fn resolve_use(
        &mut self,
        from: FileId,
        source: &ModuleSource,
        span: Span,
        problems: &mut Problems,
    ) -> Option<FileId> {
        let (origin, display, bytes) = match source {
            ModuleSource::Std(path) => {
                let Some(text) = std_module(path) else {
                    let names: Vec<&str> = STD_MODULES.iter().map(|(p, _)| *p).collect();
                    let help = match suggest::closest(path, names.iter().copied()) {
                        Some(s) => {
                            format!("did you mean `{s}`? standard modules: {}", names.join(", "))
                        }
                        None => format!("standard modules: {}", names.join(", ")),
                    };
                    problems.push(
                        from,
                        Error::UnknownStdModule {
                            path: path.clone(),
                            span: span.into(),
                            help: Some(help),
                        },
                    );
                    return None;
                };
                (
                    Origin::Std(path.clone()),
                    std_display(path),
                    Some(text.as_bytes().to_vec()),
                )
            }
            ModuleSource::File(rel) => {
                let base = match &self.sources.get(from).origin {
                    Origin::Path(p) => p.parent().map(Path::to_path_buf).unwrap_or_default(),
                    Origin::Std(_) | Origin::Set(_) => {
                        problems.push(
                            from,
                            Error::ImportUnreadable {
                                path: rel.clone(),
                                reason: "standard modules import only standard modules".into(),
                                span: span.into(),
                            },
                        );
                        return None;
                    }
                };
                let path = PathBuf::from(normalize(&base.join(rel)));
                let display = display_path(&self.sources.get(from).name, rel);
                (Origin::Path(path), display, None)
            }
        };
        if let Some(existing) = self.sources.find(&origin) {
            if let Some(pos) = self.stack.iter().position(|&f| f == existing) {
                let mut names: Vec<String> = self.stack[pos..]
                    .iter()
                    .map(|f| self.sources.get(*f).name.clone())
                    .collect();
                names.push(self.sources.get(existing).name.clone());
                problems.push(
                    from,
                    Error::ImportCycle {
                        cycle: names.join(" -> "),
                        span: span.into(),
                    },
                );
                return None;
            }
            return Some(existing);
        }
        let bytes = match bytes {
            Some(b) => b,
            None => {
                let Origin::Path(path) = &origin else {
                    unreachable!("std modules carry their text")
                };
                match self.loader.read(path) {
                    Ok(b) => b,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        let rel = match source {
                            ModuleSource::File(r) => r.clone(),
                            ModuleSource::Std(s) => s.clone(),
                        };
                        let help = if rel.ends_with(".pex") {
                            Some(
                                "import paths are relative to the importing file's directory"
                                    .to_string(),
                            )
                        } else {
                            Some(format!(
                                "module files end in .pex: did you mean \"{rel}.pex\"?"
                            ))
                        };
                        problems.push(
                            from,
                            Error::ImportMissingFile {
                                path: rel,
                                resolved: path.display().to_string(),
                                span: span.into(),
                                help,
                            },
                        );
                        return None;
                    }
                    Err(e) => {
                        problems.push(
                            from,
                            Error::ImportUnreadable {
                                path: path.display().to_string(),
                                reason: e.to_string(),
                                span: span.into(),
                            },
                        );
                        return None;
                    }
                }
            }
        };
        let id = self.add_file(display, origin, bytes, problems);
        self.load_imports(id, problems);
        Some(id)
    }
}

/// The name an imported file is shown under: its path relative to where the user is, built
/// from the importing file's shown name.
fn display_path(importer: &str, rel: &str) -> String {
    let dir = Path::new(importer).parent().unwrap_or(Path::new(""));
    normalize(&dir.join(rel))
}

/// `a/./b` and `a/x/../b` -> `a/b`, without touching the file system, so that one file
/// reached by two spellings is one module.
fn normalize(joined: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in joined.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir if parts.last().is_some_and(|p| p != "..") => {
                parts.pop();
            }
            std::path::Component::RootDir => parts.push(String::new()),
            other => parts.push(other.as_os_str().to_string_lossy().into_owned()),
        }
    }
    if parts.len() == 1 && parts[0].is_empty() {
        return "/".into();
    }
    parts.join("/")
}
