//! Backends: the CPU (burn's `flex`) by default, CUDA behind the `cuda` feature.

use burn::backend::{Autodiff, Flex};

/// The CPU backend.
pub type Cpu = Flex;
/// The CPU backend with autodiff, for training.
pub type CpuTrain = Autodiff<Cpu>;
