//! PE's models as burn modules, built from the plan's resolved configurations.

pub mod attention_pool;
pub mod config;
pub mod decoder;
pub mod kernels;
pub mod layers;
pub mod official;
pub mod posemb;
pub mod projector;
pub mod rope2d;
pub mod text;
pub mod vit;

pub use config::{Pool, TextConfig, VitConfig};
pub use decoder::{DecoderConfig, TextDecoder};
pub use projector::{MlpProjector, ProjectorConfig};
pub use text::TextTransformer;
pub use vit::{VisionOut, VisionTransformer};
