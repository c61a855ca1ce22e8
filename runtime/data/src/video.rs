//! Video sources: `synthetic_video` (shapes that move, change colour or size, captions
//! naming the motion) and `video_text` (folders of frames), as clips of frames.

use std::path::PathBuf;

use crate::augment::{self, Augment};
use crate::error::DataError;
use crate::image::RgbImage;
use crate::image_text::{captions_path, read_jsonl, Entry};
use crate::rng::Rng;
use crate::synthetic::{Scene, COLOURS, REGION_CENTRES, SHAPES};
use crate::{
    count, fraction, generic_prompts, real_split, seed, string, uint, Dataset, Sample, Split,
};
use pexc_compiler::lower::plan::Ctor;

/// A clip: its frames (each a full `Sample`, caption and label repeated), its caption,
/// and its motion class when the data has classes.
#[derive(Clone, Debug, PartialEq)]
pub struct Clip {
    pub frames: Vec<Sample>,
    pub text: String,
    pub label: Option<usize>,
}

/// An indexable clip-text source.
pub trait VideoDataset: Send + Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Clip `idx` as `frames` frames sampled uniformly across its duration (all of its
    /// frames when `frames` is 0), each at `res x res`, augmentations drawn from `rng`
    /// (the same on every frame).
    fn get_clip(
        &self,
        idx: usize,
        res: usize,
        frames: usize,
        rng: &mut Rng,
    ) -> Result<Clip, DataError>;
    /// The caption of clip `idx`.
    fn text(&self, idx: usize) -> Result<String, DataError> {
        Ok(self.get_clip(idx, 1, 1, &mut Rng::new(0))?.text)
    }
    fn class_names(&self) -> Option<Vec<String>> {
        None
    }
    /// The classes grouped into what an order-free average of frames can tell apart (a
    /// clip and the same clip reversed average alike): each group's name and classes.
    fn class_groups(&self) -> Option<Vec<(String, Vec<usize>)>> {
        None
    }
    fn prompt(&self, c: usize) -> String {
        crate::first_prompt(self.prompts(c), c)
    }
    fn prompts(&self, c: usize) -> Vec<String> {
        generic_prompts(c)
    }
}

/// Opens a video source: `synthetic_video` or `video_text`.
pub fn open_video(ctor: &Ctor, split: Split) -> Result<Box<dyn VideoDataset>, DataError> {
    match ctor.ctor.as_str() {
        "synthetic_video" => {
            let frames = uint(ctor, "frames", 0)?;
            if frames == 0 {
                return Err(DataError::arg(&ctor.ctor, "`frames` must be at least 1"));
            }
            Ok(Box::new(SyntheticVideo::new(
                count(ctor)?,
                frames,
                seed(ctor)?,
                fraction(ctor, "held_out", 0.1)?,
                split,
            )))
        }
        "video_text" => Ok(Box::new(VideoText::open(ctor, split)?)),
        other => Err(DataError::Unsupported(format!(
            "`{other}` is not a video source (synthetic_video, video_text)"
        ))),
    }
}

/// The frame indices, of `total`, that `n` frames spread uniformly over a clip take:
/// the middle of each of n equal parts.
pub fn frame_indices(total: usize, n: usize) -> Vec<usize> {
    let n = if n == 0 { total } else { n };
    (0..n)
        .map(|i| (((2 * i + 1) * total) / (2 * n)).min(total.saturating_sub(1)))
        .collect()
}

/// What happens in a synthetic clip: the label's names, in class order.
pub const MOTIONS: [&str; 7] = [
    "moving left",
    "moving right",
    "moving up",
    "moving down",
    "growing",
    "shrinking",
    "changing colour",
];

/// The motions by kind, each kind the classes that differ only in time's direction.
pub const MOTION_KINDS: [(&str, &[usize]); 4] = [
    ("moving sideways", &[0, 1]),
    ("moving vertically", &[2, 3]),
    ("changing size", &[4, 5]),
    ("changing colour", &[6]),
];

/// Shape kinds used in clips: the first 8 of `SHAPES`.
const VIDEO_SHAPES: usize = 8;

/// A clip's vector description over time t in [0, 1].
#[derive(Clone, Debug)]
struct Motion {
    motion: usize,
    base: Scene,
    /// Start and end of the centre.
    from: (f32, f32),
    to: (f32, f32),
    radius: (f32, f32),
    colours: ([f32; 3], [f32; 3]),
    /// When the colour switches (abruptly, so that no single frame shows a blend).
    switch: f32,
}

impl Motion {
    fn at(&self, t: f32) -> Scene {
        let lerp = |a: f32, b: f32| a + (b - a) * t;
        Scene {
            cx: lerp(self.from.0, self.to.0),
            cy: lerp(self.from.1, self.to.1),
            radius: lerp(self.radius.0, self.radius.1),
            colour: if t < self.switch {
                self.colours.0
            } else {
                self.colours.1
            },
            ..self.base.clone()
        }
    }
}

/// `synthetic_video(count, frames, seed, held_out)`: clip `i` is fixed by `(seed, i)`;
/// Train holds clips `0..round((1 - held_out) * count)`, HeldOut the rest. Positions and
/// sizes are drawn so that the middle frame alone says little about the motion: a shape
/// moving left and one moving right pass the same places at t = 0.5 (both cross the
/// image between the outer cells of the 3 x 3 grid), one growing and one shrinking have
/// the same size there.
pub struct SyntheticVideo {
    frames: usize,
    seed: u64,
    start: usize,
    len: usize,
}

impl SyntheticVideo {
    pub fn new(
        count: usize,
        frames: usize,
        seed: u64,
        held_out: f64,
        split: Split,
    ) -> SyntheticVideo {
        let held_out = held_out.clamp(0.0, 1.0);
        let train = (((1.0 - held_out) * count as f64).round() as usize).min(count);
        let (start, len) = match split {
            Split::Train => (0, train),
            Split::HeldOut => (train, count - train),
        };
        SyntheticVideo {
            frames: frames.max(1),
            seed,
            start,
            len,
        }
    }

    fn clip(&self, idx: usize) -> Result<(Motion, String), DataError> {
        if idx >= self.len {
            return Err(DataError::OutOfRange { idx, len: self.len });
        }
        // A salt, so that shapes and clips of one seed differ.
        let mut r = Rng::derive(self.seed ^ 0x0F1D_E05E_ED00_0000, (self.start + idx) as u64);
        let shape = r.below(VIDEO_SHAPES);
        let motion = r.below(MOTIONS.len());
        let c1 = r.below(COLOURS.len());
        let c2 = (c1 + 1 + r.below(COLOURS.len() - 1)) % COLOURS.len();
        let grey = r.range(0.0, 0.35);
        let base = Scene {
            shape,
            colour: COLOURS[c1].1,
            cx: 0.5,
            cy: 0.5,
            radius: 0.14,
            angle: r.range(-0.26, 0.26),
            background: [grey; 3],
            noise: r.next_u64(),
        };
        // Where a still shape sits, and the row or column a moving one keeps: a cell of
        // the 3 x 3 grid, as synthetic_shapes places its shapes, so that the captioner
        // (trained on those stills) reads the first and last frames as it reads them.
        let cell = |r: &mut Rng| REGION_CENTRES[r.below(3)] + r.range(-0.04, 0.04);
        let mid = (cell(&mut r), cell(&mut r));
        // Moving shapes cross the image, from one outer cell's centre to the other's.
        let (near, far) = (
            REGION_CENTRES[0] + r.range(-0.03, 0.03),
            REGION_CENTRES[2] + r.range(-0.03, 0.03),
        );
        let (from, to) = match motion {
            0 => ((far, mid.1), (near, mid.1)),
            1 => ((near, mid.1), (far, mid.1)),
            2 => ((mid.0, far), (mid.0, near)),
            3 => ((mid.0, near), (mid.0, far)),
            _ => (mid, mid),
        };
        // Sizes as synthetic_shapes' small and large; growing and shrinking go between them.
        let radius = r.range(0.14, 0.18);
        let radius = match motion {
            4 => (0.16, 0.25),
            5 => (0.25, 0.16),
            _ => (radius, radius),
        };
        let colours = (
            COLOURS[c1].1,
            if motion == 6 {
                COLOURS[c2].1
            } else {
                COLOURS[c1].1
            },
        );
        let (name, cn1, cn2) = (SHAPES[shape], COLOURS[c1].0, COLOURS[c2].0);
        let variant = r.below(2);
        let caption = match (motion, variant) {
            (0..=3, 0) => format!("a {cn1} {name} {}", MOTIONS[motion]),
            (0..=3, _) => format!("a {name} {}", MOTIONS[motion]),
            (4, 0) => format!("a {cn1} {name} growing"),
            (4, _) => format!("a {cn1} {name} getting bigger"),
            (5, 0) => format!("a {cn1} {name} shrinking"),
            (5, _) => format!("a {cn1} {name} getting smaller"),
            (_, 0) => format!("a {name} turning from {cn1} to {cn2}"),
            (_, _) => format!("a {name} changing from {cn1} to {cn2}"),
        };
        let m = Motion {
            motion,
            base,
            from,
            to,
            radius,
            colours,
            switch: r.range(0.3, 0.7),
        };
        Ok((m, caption))
    }
}

impl VideoDataset for SyntheticVideo {
    fn len(&self) -> usize {
        self.len
    }

    fn get_clip(
        &self,
        idx: usize,
        res: usize,
        frames: usize,
        _rng: &mut Rng,
    ) -> Result<Clip, DataError> {
        let (m, text) = self.clip(idx)?;
        let frames = frame_indices(self.frames, frames)
            .into_iter()
            .map(|k| {
                let t = if self.frames > 1 {
                    k as f32 / (self.frames - 1) as f32
                } else {
                    0.5
                };
                let scene = m.at(t);
                let (img, mask) = scene.render(res, scene.shape as u8 + 1);
                Sample {
                    image: img.normalised(),
                    height: res,
                    width: res,
                    text: text.clone(),
                    label: Some(m.motion),
                    mask: Some(mask),
                }
            })
            .collect();
        Ok(Clip {
            frames,
            text,
            label: Some(m.motion),
        })
    }

    fn text(&self, idx: usize) -> Result<String, DataError> {
        Ok(self.clip(idx)?.1)
    }

    fn class_names(&self) -> Option<Vec<String>> {
        Some(MOTIONS.iter().map(|s| s.to_string()).collect())
    }

    /// Left and right, up and down, growing and shrinking are each one clip played
    /// forwards and backwards: their frames are the same set.
    fn class_groups(&self) -> Option<Vec<(String, Vec<usize>)>> {
        Some(
            MOTION_KINDS
                .iter()
                .map(|(name, classes)| (name.to_string(), classes.to_vec()))
                .collect(),
        )
    }

    /// One prompt per shape, phrased like the captions.
    fn prompts(&self, c: usize) -> Vec<String> {
        let motion = MOTIONS.get(c).copied().unwrap_or("moving");
        SHAPES[..VIDEO_SHAPES]
            .iter()
            .enumerate()
            .map(|(i, s)| {
                if c == 6 {
                    let a = COLOURS[i % COLOURS.len()].0;
                    let b = COLOURS[(i + 1) % COLOURS.len()].0;
                    format!("a {s} turning from {a} to {b}")
                } else {
                    format!("a {s} {motion}")
                }
            })
            .collect()
    }
}

/// `video_text(root, captions, augment)`: a JSONL of `{"video": folder, "text"}`, each
/// folder holding a clip's frames as PNG/JPEG files in name order.
pub struct VideoText {
    entries: Vec<Entry>,
    augment: Vec<Augment>,
}

impl VideoText {
    pub fn open(c: &Ctor, split: Split) -> Result<VideoText, DataError> {
        let root = PathBuf::from(string(c, "root", None)?);
        let captions = captions_path(&root, std::path::Path::new(string(c, "captions", None)?))?;
        let (entries, _) = read_jsonl(&captions, &root, "video", crate::OnBad::Error)?;
        let range = real_split(entries.len(), split);
        Ok(VideoText {
            entries: entries[range].to_vec(),
            augment: Augment::list(c)?,
        })
    }
}

impl VideoDataset for VideoText {
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn get_clip(
        &self,
        idx: usize,
        res: usize,
        frames: usize,
        rng: &mut Rng,
    ) -> Result<Clip, DataError> {
        let e = self.entries.get(idx).ok_or(DataError::OutOfRange {
            idx,
            len: self.entries.len(),
        })?;
        let dir = &e.image;
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|err| DataError::io(dir, err))?
            .filter_map(|f| f.ok().map(|f| f.path()))
            .filter(|p| {
                p.extension().and_then(|x| x.to_str()).is_some_and(|x| {
                    matches!(x.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg")
                })
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(DataError::io(
                dir,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the clip folder has no PNG or JPEG frames",
                ),
            ));
        }
        // The same draws for every frame: clone the stream, then move it past one frame.
        let start = rng.clone();
        let mut out = Vec::new();
        for k in frame_indices(files.len(), frames) {
            let mut r = start.clone();
            let img = augment::apply(&self.augment, RgbImage::open(&files[k])?, res, &mut r);
            *rng = r;
            out.push(Sample {
                image: img.normalised(),
                height: res,
                width: res,
                text: e.text.clone(),
                label: None,
                mask: None,
            });
        }
        Ok(Clip {
            frames: out,
            text: e.text.clone(),
            label: None,
        })
    }

    fn text(&self, idx: usize) -> Result<String, DataError> {
        self.entries
            .get(idx)
            .map(|e| e.text.clone())
            .ok_or(DataError::OutOfRange {
                idx,
                len: self.entries.len(),
            })
    }
}

/// A video source seen as images: each clip's middle frame.
pub struct MiddleFrames(pub Box<dyn VideoDataset>);

impl Dataset for MiddleFrames {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn get(&self, idx: usize, res: usize, rng: &mut Rng) -> Result<Sample, DataError> {
        let clip = self.0.get_clip(idx, res, 1, rng)?;
        clip.frames
            .into_iter()
            .next()
            .ok_or_else(|| DataError::Loader(format!("clip {idx} has no frames")))
    }

    fn text(&self, idx: usize) -> Result<String, DataError> {
        self.0.text(idx)
    }

    fn class_names(&self) -> Option<Vec<String>> {
        self.0.class_names()
    }

    fn prompt(&self, c: usize) -> String {
        self.0.prompt(c)
    }

    fn prompts(&self, c: usize) -> Vec<String> {
        self.0.prompts(c)
    }
}

/// A video source seen as samples of stacked frames, for frame pooling: sample `idx` is
/// clip `idx` with `frames` frames sampled uniformly, their images one after another in
/// `image` (frame-major, each CHW), `height` the frame height times `frames` and `width`
/// the frame width, so that `image` reshapes to (frames, 3, height / frames, width). The
/// mask, when there is one, stacks the same way; caption and label are the clip's.
pub struct FrameStack {
    pub clips: Box<dyn VideoDataset>,
    pub frames: usize,
}

impl Dataset for FrameStack {
    fn len(&self) -> usize {
        self.clips.len()
    }

    fn get(&self, idx: usize, res: usize, rng: &mut Rng) -> Result<Sample, DataError> {
        let clip = self.clips.get_clip(idx, res, self.frames, rng)?;
        if clip.frames.len() != self.frames {
            return Err(DataError::Loader(format!(
                "clip {idx} gave {} frames, {} were asked for",
                clip.frames.len(),
                self.frames
            )));
        }
        let mut image = Vec::with_capacity(self.frames * 3 * res * res);
        let mut mask: Option<Vec<u8>> = Some(Vec::new());
        let (mut h, mut w) = (0, 0);
        for f in clip.frames {
            (h, w) = (f.height, f.width);
            image.extend_from_slice(&f.image);
            match (&mut mask, f.mask) {
                (Some(m), Some(fm)) => m.extend(fm),
                _ => mask = None,
            }
        }
        Ok(Sample {
            image,
            height: h * self.frames,
            width: w,
            text: clip.text,
            label: clip.label,
            mask,
        })
    }

    fn text(&self, idx: usize) -> Result<String, DataError> {
        self.clips.text(idx)
    }

    fn class_names(&self) -> Option<Vec<String>> {
        self.clips.class_names()
    }

    fn prompt(&self, c: usize) -> String {
        self.clips.prompt(c)
    }

    fn prompts(&self, c: usize) -> Vec<String> {
        self.clips.prompts(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_ctor;
    use pexc_compiler::lower::plan::Arg;

    fn video(split: Split) -> Box<dyn VideoDataset> {
        let c = test_ctor(
            "synthetic_video",
            &[
                ("count", Arg::Int(200)),
                ("frames", Arg::Int(8)),
                ("seed", Arg::Int(2)),
                ("held_out", Arg::Float(0.1)),
            ],
        );
        open_video(&c, split).unwrap()
    }

    #[test]
    fn frames_spread_over_the_clip() {
        assert_eq!(frame_indices(8, 4), [1, 3, 5, 7]);
        assert_eq!(frame_indices(8, 1), [4]);
        assert_eq!(frame_indices(3, 0), [0, 1, 2]);
        assert_eq!(frame_indices(2, 5), [0, 0, 1, 1, 1]);
    }

    #[test]
    fn clips_are_deterministic_and_captions_name_the_motion() {
        let v = video(Split::Train);
        assert_eq!((v.len(), video(Split::HeldOut).len()), (180, 20));
        let mut seen = [0usize; 7];
        for i in 0..60 {
            let a = v.get_clip(i, 24, 4, &mut Rng::new(0)).unwrap();
            let b = v.get_clip(i, 24, 4, &mut Rng::new(5)).unwrap();
            assert_eq!(a, b);
            assert_eq!(a.frames.len(), 4);
            let m = a.label.unwrap();
            seen[m] += 1;
            let words = match m {
                0..=3 => vec![MOTIONS[m]],
                4 => vec!["growing", "getting bigger"],
                5 => vec!["shrinking", "getting smaller"],
                _ => vec!["turning from", "changing from"],
            };
            assert!(words.iter().any(|w| a.text.contains(w)), "{m}: {}", a.text);
            assert_eq!(v.text(i).unwrap(), a.text);
            // The frames differ: something moves or changes.
            assert_ne!(a.frames[0].image, a.frames[3].image, "{}", a.text);
            let fg = |s: &Sample| s.mask.as_ref().unwrap().iter().filter(|&&x| x > 0).count();
            if m == 4 {
                assert!(fg(&a.frames[3]) > fg(&a.frames[0]));
            }
            if m == 5 {
                assert!(fg(&a.frames[3]) < fg(&a.frames[0]));
            }
        }
        assert!(seen.iter().all(|&n| n > 0), "{seen:?}");
        assert_eq!(v.class_names().unwrap().len(), 7);
        assert!(v.prompt(0).ends_with("moving left"));
        // Every class is of exactly one kind, and a kind's two classes are one motion
        // forwards and backwards.
        let kinds = v.class_groups().unwrap();
        for c in 0..7 {
            assert_eq!(
                kinds.iter().filter(|(_, g)| g.contains(&c)).count(),
                1,
                "{c}"
            );
        }
        let opposite = |a: &str, b: &str| {
            [("left", "right"), ("up", "down"), ("growing", "shrinking")]
                .iter()
                .any(|&(x, y)| {
                    (a.ends_with(x) && b.ends_with(y)) || (a.ends_with(y) && b.ends_with(x))
                })
        };
        for (name, g) in &kinds {
            if let [a, b] = g[..] {
                assert!(opposite(MOTIONS[a], MOTIONS[b]), "{name}");
            }
        }
    }

    #[test]
    fn open_gives_middle_frames() {
        let c = test_ctor(
            "synthetic_video",
            &[("count", Arg::Int(20)), ("frames", Arg::Int(5))],
        );
        let d = crate::open(&c, Split::Train).unwrap();
        let v = open_video(&c, Split::Train).unwrap();
        let s = d.get(3, 16, &mut Rng::new(0)).unwrap();
        let clip = v.get_clip(3, 16, 1, &mut Rng::new(0)).unwrap();
        assert_eq!(s, clip.frames[0]);
        assert_eq!(d.class_names().unwrap()[6], "changing colour");
    }

    #[test]
    fn video_text_reads_frame_folders() {
        use crate::image_text::tests::png;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (clip, n) in [("c0", 4u8), ("c1", 2)] {
            std::fs::create_dir_all(root.join(clip)).unwrap();
            for f in 0..n {
                std::fs::write(
                    root.join(clip).join(format!("{f:03}.png")),
                    png(4, 4, |_, _| [f * 60; 3]),
                )
                .unwrap();
            }
        }
        std::fs::write(
            root.join("clips.jsonl"),
            "{\"video\": \"c0\", \"text\": \"fading in\"}\n{\"video\": \"c1\", \"text\": \"two\"}\n",
        )
        .unwrap();
        let c = test_ctor(
            "video_text",
            &[
                ("root", Arg::Str(root.display().to_string())),
                (
                    "captions",
                    Arg::Str(root.join("clips.jsonl").display().to_string()),
                ),
                (
                    "augment",
                    Arg::List(vec![Arg::Call(test_ctor(
                        "hflip",
                        &[("p", Arg::Float(0.5))],
                    ))]),
                ),
            ],
        );
        let v = open_video(&c, Split::Train).unwrap();
        let clip = v.get_clip(0, 4, 2, &mut Rng::new(1)).unwrap();
        assert_eq!(clip.text, "fading in");
        // Frames 1 and 3 of 4: grey 60 and 180.
        let want = [60.0f32, 180.0].map(|g| (g / 255.0 - 0.5) / 0.5);
        for (f, w) in clip.frames.iter().zip(want) {
            assert!(f.image.iter().all(|v| (v - w).abs() < 1e-4));
        }
        assert_eq!(
            v.get_clip(1, 4, 0, &mut Rng::new(1)).unwrap().frames.len(),
            2
        );
        std::fs::create_dir_all(root.join("empty")).unwrap();
        std::fs::write(
            root.join("e.jsonl"),
            "{\"video\": \"empty\", \"text\": \"none\"}\n",
        )
        .unwrap();
        let c = test_ctor(
            "video_text",
            &[
                ("root", Arg::Str(root.display().to_string())),
                (
                    "captions",
                    Arg::Str(root.join("e.jsonl").display().to_string()),
                ),
            ],
        );
        let err = open_video(&c, Split::Train)
            .unwrap()
            .get_clip(0, 4, 1, &mut Rng::new(0))
            .unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
    }

    #[test]
    fn frame_stacks_hold_the_sampled_frames_in_order() {
        let v = video(Split::Train);
        let clip = v.get_clip(3, 16, 4, &mut Rng::new(0)).unwrap();
        let stack = FrameStack {
            clips: video(Split::Train),
            frames: 4,
        };
        let s = stack.get(3, 16, &mut Rng::new(0)).unwrap();
        assert_eq!((s.height, s.width), (64, 16));
        assert_eq!(s.image.len(), 4 * 3 * 16 * 16);
        for (k, f) in clip.frames.iter().enumerate() {
            assert_eq!(&s.image[k * 768..(k + 1) * 768], &f.image[..], "frame {k}");
        }
        assert_eq!((s.text, s.label), (clip.text, clip.label));
        assert_eq!(s.mask.map(|m| m.len()), Some(4 * 256));
    }
}
