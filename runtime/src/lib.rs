//! The pexc runtime: executes a lowered plan with burn. It arrives with the runtime issue;
//! the crate exists now so the workspace layout is the final one.
