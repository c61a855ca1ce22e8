//! The `pexc` command line as a library: rendering of diagnostics (human and JSON) and the
//! commands, so that integration tests drive exactly what the binary runs.

pub mod cli;
pub mod embed_cmd;
pub mod explain;
pub mod fmt_cmd;
pub mod plan_cmd;
pub mod render;
pub mod run_cmd;
pub mod weights;
