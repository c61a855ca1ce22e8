//! Syntax: the pest grammar (grammar/pex.pest), the AST, and syntax errors in words.

pub mod ast;
mod fast;
pub mod parse;
pub mod words;

pub use parse::{parse_module, MAX_FILE_BYTES, MAX_NESTING};
