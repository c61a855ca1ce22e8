//! The pexc runtime: executes a lowered plan with burn.

pub mod alloc;
pub mod backend;
pub mod caption;
pub mod checkpoint;
pub mod embed;
pub mod eval;
pub mod export;
pub mod fault;
pub mod loss;
pub mod model;
pub mod optim;
pub mod probe;
pub mod report;
pub mod rng;
pub mod run;
pub mod rundir;
pub mod schedule;
pub mod train;

/// Data sources, augmentations, tokenizers and background loading (burn-free).
pub use pexc_data as data;

/// The burn version the runtime is built on, for benches and tests.
pub use burn;
