//! Backends: the CPU (burn's `flex`, measured fastest of burn 0.21's CPU backends) by
//! default, CUDA behind the `cuda` cargo feature. burn 0.21 panics when a CUDA device is
//! created without libcuda, so availability is detected first (through cudarc, the copy
//! burn-cuda uses) and a missing GPU is an error, never a panic.

use burn::backend::{Autodiff, Flex};

/// The CPU backend.
pub type Cpu = Flex;
/// The CPU backend with autodiff, for training.
pub type CpuTrain = Autodiff<Cpu>;

#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda;
#[cfg(feature = "cuda")]
pub type CudaTrain = Autodiff<Cuda>;

/// What the user asked for (`--backend`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    Auto,
    Cpu,
    Cuda,
}

/// What runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolved {
    Cpu,
    Cuda,
}

impl Resolved {
    pub fn name(self) -> &'static str {
        match self {
            Resolved::Cpu => "cpu (burn flex)",
            Resolved::Cuda => "cuda (burn-cuda, device 0)",
        }
    }
}

/// Whether a CUDA device can be used: the feature is built in, libcuda loads, and it
/// reports at least one device.
pub fn cuda_available() -> Result<(), String> {
    #[cfg(feature = "cuda")]
    {
        // SAFETY: only probes whether the shared library can be loaded.
        let present = unsafe { cudarc::driver::sys::is_culib_present() };
        if !present {
            return Err("no CUDA driver: libcuda could not be loaded".into());
        }
        match cudarc::driver::CudaContext::device_count() {
            Ok(n) if n > 0 => Ok(()),
            Ok(_) => Err("the CUDA driver reports no device".into()),
            Err(e) => Err(format!("the CUDA driver failed to start: {e}")),
        }
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err("this pexc was built without CUDA; rebuild with `cargo build --release --features cuda`".into())
    }
}

/// Resolves `--backend`: `auto` takes CUDA when it is usable, else the CPU.
pub fn resolve(choice: Choice) -> Result<Resolved, String> {
    match choice {
        Choice::Cpu => Ok(Resolved::Cpu),
        Choice::Cuda => cuda_available()
            .map(|()| Resolved::Cuda)
            .map_err(|why| format!("--backend cuda: {why}")),
        Choice::Auto => Ok(if cuda_available().is_ok() {
            Resolved::Cuda
        } else {
            Resolved::Cpu
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_always_available_and_cuda_is_an_error_not_a_panic_without_a_gpu() {
        assert_eq!(resolve(Choice::Cpu), Ok(Resolved::Cpu));
        match resolve(Choice::Cuda) {
            Ok(Resolved::Cuda) => {} // a machine with a GPU
            Ok(Resolved::Cpu) => panic!("asked for CUDA, got the CPU"),
            Err(e) => assert!(e.starts_with("--backend cuda: "), "{e}"),
        }
        assert!(resolve(Choice::Auto).is_ok());
    }
}
