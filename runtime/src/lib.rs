//! The pexc runtime: executes a lowered plan with burn.

pub mod backend;
pub mod checkpoint;
pub mod loss;
pub mod model;
pub mod optim;
pub mod rundir;
pub mod schedule;
