//! The pex standard library: the typed catalogue of every constructor (shared by the
//! checker and the runtime) and the `std::...` modules written in pex.

pub mod catalogue;
pub mod types;

pub use catalogue::{
    constructor, stage_field, Constraint, Constructor, DefaultValue, Param, StageField, Tag,
    CONSTRUCTORS, STAGE_FIELDS, UNITS,
};
pub use types::{Kind, Ty};

/// The standard library's pex modules, embedded in the binary: (`std::` path, source).
pub static STD_MODULES: &[(&str, &str)] = &[("std::pe", include_str!("../std/pe.pex"))];

/// The source of a `std::` module.
pub fn std_module(path: &str) -> Option<&'static str> {
    STD_MODULES
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, s)| *s)
}

/// Modules whose definitions are in scope in every file without a `use` (lowest priority:
/// a file's own definitions and imports shadow them).
pub static PRELUDE: &[&str] = &["std::pe"];
