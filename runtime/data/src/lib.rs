//! Data for the pexc runtime: the `.pex` data sources (synthetic shapes and video,
//! `image_text`, `webdataset`, `video_text`), augmentations, tokenizers and background
//! loading. Free of burn: samples are plain `Vec<f32>` images in CHW layout.

pub mod augment;
pub mod error;
pub mod image;
pub mod image_text;
pub mod mask_logits;
pub mod prefetch;
pub mod rng;
pub mod screen;
pub mod synthetic;
pub mod tokenizer;
pub mod video;
pub mod webdataset;

pub use error::DataError;
pub use prefetch::{BatchRequest, Prefetch};
pub use rng::Rng;
pub use screen::{Bad, BadLog, OnBad, Screened};
pub use tokenizer::Tokenizer;
pub use video::{open_video, Clip, FrameStack, VideoDataset};

use pexc_compiler::lower::plan::Ctor;

/// Which part of a data source: what training reads, or what evaluation reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    HeldOut,
}

/// One image with its caption.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// `3 * height * width` values, CHW, normalised: `(pixel/255 - 0.5) / 0.5`.
    pub image: Vec<f32>,
    pub height: usize,
    pub width: usize,
    pub text: String,
    /// The class index, when the data has classes.
    pub label: Option<usize>,
    /// Per-pixel ground truth at `(height, width)`: 0 background, `k + 1` for class `k`.
    /// `None` for real data.
    pub mask: Option<Vec<u8>>,
}

/// An indexable image-text source.
pub trait Dataset: Send + Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Sample `idx` rendered or resized to `res x res` (squash resize), augmentations
    /// drawn from `rng`.
    fn get(&self, idx: usize, res: usize, rng: &mut Rng) -> Result<Sample, DataError>;
    /// The caption of sample `idx` alone (no decoding where the source can avoid it):
    /// what a tokenizer learns from.
    fn text(&self, idx: usize) -> Result<String, DataError> {
        Ok(self.get(idx, 1, &mut Rng::new(0))?.text)
    }
    /// What sample `idx` is, for messages: its file, or its shard and key.
    fn name(&self, idx: usize) -> String {
        format!("sample {idx}")
    }
    /// Samples left out when the source was opened (with `on_bad: "skip"`): JSONL lines
    /// without a caption, keys without an image or caption member, shards without samples.
    fn skipped_at_open(&self) -> Vec<Bad> {
        Vec::new()
    }
    /// Question/answer pairs about sample `idx` (PE-lang's QA data; none for most
    /// sources).
    fn questions(&self, _idx: usize) -> Result<Vec<(String, String)>, DataError> {
        Ok(Vec::new())
    }
    fn class_names(&self) -> Option<Vec<String>> {
        None
    }
    /// The zero-shot prompt of class `c` (the first of `prompts(c)`).
    fn prompt(&self, c: usize) -> String {
        first_prompt(self.prompts(c), c)
    }
    /// The prompt ensemble of class `c`, for zero-shot evaluation.
    fn prompts(&self, c: usize) -> Vec<String> {
        generic_prompts(c)
    }
}

/// The first prompt of an ensemble (the generic one for an empty ensemble).
pub(crate) fn first_prompt(prompts: Vec<String>, c: usize) -> String {
    prompts
        .into_iter()
        .next()
        .unwrap_or_else(|| format!("a photo of class {c}"))
}

/// Opens the data source a plan's constructor names. A video source opens as images:
/// each sample is its clip's middle frame with the clip's caption (enough to learn a
/// tokenizer, or for a single-frame baseline); `open_video` gives whole clips.
pub fn open(ctor: &Ctor, split: Split) -> Result<Box<dyn Dataset>, DataError> {
    match ctor.ctor.as_str() {
        "synthetic_shapes" => Ok(Box::new(synthetic::SyntheticShapes::new(
            count(ctor)?,
            seed(ctor)?,
            uint(ctor, "classes", 8)?,
            fraction(ctor, "held_out", 0.1)?,
            split,
        )?)),
        "image_text" => Ok(Box::new(image_text::ImageText::open(ctor, split)?)),
        "webdataset" => Ok(Box::new(webdataset::WebDataset::open(ctor, split)?)),
        "synthetic_video" | "video_text" => {
            Ok(Box::new(video::MiddleFrames(open_video(ctor, split)?)))
        }
        other => Err(DataError::Unsupported(format!(
            "`{other}` is not a data source this runtime can open \
             (synthetic_shapes, synthetic_video, image_text, video_text, webdataset)"
        ))),
    }
}

// ---------------------------------------------------------------- constructor arguments

pub(crate) fn count(c: &Ctor) -> Result<usize, DataError> {
    match c.int("count") {
        Some(n) if n > 0 => Ok(n as usize),
        Some(n) => Err(DataError::arg(
            &c.ctor,
            format!("`count` must be positive, not {n}"),
        )),
        None => Err(DataError::arg(&c.ctor, "needs `count`, a whole number")),
    }
}

pub(crate) fn seed(c: &Ctor) -> Result<u64, DataError> {
    match c.arg("seed") {
        None => Ok(0),
        Some(_) => c
            .int("seed")
            .map(|s| s as u64)
            .ok_or_else(|| DataError::arg(&c.ctor, "`seed` must be a whole number")),
    }
}

pub(crate) fn uint(c: &Ctor, name: &str, default: usize) -> Result<usize, DataError> {
    match c.arg(name) {
        None => Ok(default),
        Some(_) => match c.int(name) {
            Some(n) if n >= 0 => Ok(n as usize),
            _ => Err(DataError::arg(
                &c.ctor,
                format!("`{name}` must be a whole number >= 0"),
            )),
        },
    }
}

pub(crate) fn fraction(c: &Ctor, name: &str, default: f64) -> Result<f64, DataError> {
    match c.arg(name) {
        None => Ok(default),
        Some(_) => match c.float(name) {
            Some(f) if (0.0..=1.0).contains(&f) => Ok(f),
            _ => Err(DataError::arg(
                &c.ctor,
                format!("`{name}` must be a fraction in [0, 1]"),
            )),
        },
    }
}

pub(crate) fn string<'a>(
    c: &'a Ctor,
    name: &str,
    default: Option<&'a str>,
) -> Result<&'a str, DataError> {
    match (c.arg(name), default) {
        (None, Some(d)) => Ok(d),
        (None, None) => Err(DataError::arg(&c.ctor, format!("needs `{name}`"))),
        (Some(_), _) => c
            .str(name)
            .ok_or_else(|| DataError::arg(&c.ctor, format!("`{name}` must be a string"))),
    }
}

/// How real data (image_text, webdataset, video_text) splits: HeldOut is the last
/// `min(n / 10, 1000)` samples in file (or key) order, Train the rest. A source of fewer
/// than 10 samples has no held-out part.
pub(crate) fn real_split(n: usize, split: Split) -> std::ops::Range<usize> {
    let held = (n / 10).min(1000);
    match split {
        Split::Train => 0..n - held,
        Split::HeldOut => n - held..n,
    }
}

/// Prompts for data without classes: a neutral caption.
pub(crate) fn generic_prompts(c: usize) -> Vec<String> {
    vec![first_prompt(Vec::new(), c)]
}

#[cfg(test)]
pub(crate) fn test_ctor(name: &str, args: &[(&str, pexc_compiler::lower::plan::Arg)]) -> Ctor {
    Ctor {
        ctor: name.to_string(),
        args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pexc_compiler::lower::plan::Arg;

    #[test]
    fn open_reads_the_plan_and_rejects_unknown_sources() {
        let c = test_ctor(
            "synthetic_shapes",
            &[
                ("count", Arg::Int(50)),
                ("seed", Arg::Int(3)),
                ("classes", Arg::Int(4)),
                ("held_out", Arg::Float(0.2)),
            ],
        );
        let train = open(&c, Split::Train).unwrap();
        let held = open(&c, Split::HeldOut).unwrap();
        assert_eq!((train.len(), held.len()), (40, 10));
        assert_eq!(train.class_names().unwrap().len(), 4);
        let err = open(&test_ctor("laion_magic", &[]), Split::Train)
            .err()
            .unwrap();
        assert!(matches!(err, DataError::Unsupported(_)));
        assert!(err.to_string().contains("laion_magic"), "{err}");
        let err = open(&test_ctor("synthetic_shapes", &[]), Split::Train)
            .err()
            .unwrap();
        assert!(err.to_string().contains("count"), "{err}");
    }

    #[test]
    fn real_split_holds_out_the_last_tenth_capped() {
        assert_eq!(real_split(100, Split::Train), 0..90);
        assert_eq!(real_split(100, Split::HeldOut), 90..100);
        assert_eq!(real_split(5, Split::HeldOut), 5..5);
        assert_eq!(real_split(50_000, Split::HeldOut).len(), 1000);
    }
}
