//! `synthetic_shapes`: coloured shapes drawn from a vector description at any resolution,
//! with captions that describe them and per-pixel masks.

use crate::error::DataError;
use crate::image::RgbImage;
use crate::rng::Rng;
use crate::{Dataset, Sample, Split};

/// Shape kinds, in class order: `classes: k` uses the first k.
pub const SHAPES: [&str; 16] = [
    "circle",
    "square",
    "triangle",
    "cross",
    "ring",
    "diamond",
    "star",
    "hexagon",
    "heart",
    "crescent",
    "arrow",
    "semicircle",
    "pentagon",
    "ellipse",
    "rectangle",
    "hourglass",
];

/// Named colours, bright enough to stand out on every background tone.
pub const COLOURS: [(&str, [f32; 3]); 8] = [
    ("red", [0.92, 0.12, 0.10]),
    ("green", [0.15, 0.80, 0.20]),
    ("blue", [0.15, 0.35, 0.98]),
    ("yellow", [0.96, 0.90, 0.12]),
    ("orange", [1.00, 0.55, 0.05]),
    ("purple", [0.62, 0.22, 0.88]),
    ("white", [0.97, 0.97, 0.97]),
    ("cyan", [0.10, 0.86, 0.92]),
];

/// The 3 x 3 regions a shape sits in, row-major.
pub const POSITIONS: [&str; 9] = [
    "top left",
    "top",
    "top right",
    "left",
    "center",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
];

pub(crate) const REGION_CENTRES: [f32; 3] = [0.22, 0.5, 0.78];

/// One shape on a plain background, in image-relative units ([0, 1] across the image),
/// so it rasterises to the same picture at every resolution.
#[derive(Clone, Debug, PartialEq)]
pub struct Scene {
    /// Index into `SHAPES`.
    pub shape: usize,
    pub colour: [f32; 3],
    /// Centre.
    pub cx: f32,
    pub cy: f32,
    /// The shape's outer radius.
    pub radius: f32,
    /// Rotation in radians.
    pub angle: f32,
    pub background: [f32; 3],
    /// Seeds the faint pixel noise.
    pub noise: u64,
}

/// Whether the point `(u, v)` (shape-local: radius 1, v pointing down) is inside `shape`.
pub fn inside(shape: usize, u: f32, v: f32) -> bool {
    let r2 = u * u + v * v;
    match shape {
        0 => r2 <= 1.0,
        1 => u.abs() <= 0.8 && v.abs() <= 0.8,
        2 => regular_polygon(3, u, v),
        3 => (u.abs() <= 0.3 && v.abs() <= 0.95) || (v.abs() <= 0.3 && u.abs() <= 0.95),
        4 => (0.3025..=1.0).contains(&r2),
        5 => u.abs() + v.abs() <= 1.0,
        6 => in_polygon(&STAR, u, v),
        7 => regular_polygon(6, u, v),
        8 => {
            let x = u * 1.15;
            let y = -v * 1.15 + 0.15;
            let a = x * x + y * y - 1.0;
            a * a * a - x * x * y * y * y <= 0.0
        }
        9 => r2 <= 1.0 && (u - 0.45) * (u - 0.45) + v * v > 0.64,
        10 => in_polygon(&ARROW, u, v),
        11 => v <= 0.35 && u * u + (v - 0.35) * (v - 0.35) <= 1.0,
        12 => regular_polygon(5, u, v),
        13 => u * u + 4.0 * v * v <= 1.0,
        14 => u.abs() <= 1.0 && v.abs() <= 0.45,
        _ => v.abs() <= 0.95 && u.abs() <= 0.9 * v.abs() + 0.05,
    }
}

const STAR: [(f32, f32); 10] = star_points();
const ARROW: [(f32, f32); 7] = [
    (-1.0, -0.25),
    (0.1, -0.25),
    (0.1, -0.7),
    (1.0, 0.0),
    (0.1, 0.7),
    (0.1, 0.25),
    (-1.0, 0.25),
];

/// A five-pointed star, point up (a table of unit vectors: no float trig in const fn).
const fn star_points() -> [(f32, f32); 10] {
    // cos/sin of -90 + 36 k degrees, k = 0..10, outer radius 1 and inner 0.45.
    const C: [(f32, f32); 10] = [
        (0.0, -1.0),
        (0.587_785, -0.809_017),
        (0.951_057, -0.309_017),
        (0.951_057, 0.309_017),
        (0.587_785, 0.809_017),
        (0.0, 1.0),
        (-0.587_785, 0.809_017),
        (-0.951_057, 0.309_017),
        (-0.951_057, -0.309_017),
        (-0.587_785, -0.809_017),
    ];
    let mut out = [(0.0, 0.0); 10];
    let mut k = 0;
    while k < 10 {
        let r = if k % 2 == 0 { 1.0 } else { 0.45 };
        out[k] = (C[k].0 * r, C[k].1 * r);
        k += 1;
    }
    out
}

/// A regular n-gon of circumradius 1 with a vertex at the top.
fn regular_polygon(n: u32, u: f32, v: f32) -> bool {
    let sector = std::f32::consts::TAU / n as f32;
    let theta = v.atan2(u) + std::f32::consts::FRAC_PI_2;
    let local = theta.rem_euclid(sector) - sector / 2.0;
    (u * u + v * v).sqrt() * local.cos() <= (sector / 2.0).cos()
}

/// Even-odd point-in-polygon.
fn in_polygon(pts: &[(f32, f32)], u: f32, v: f32) -> bool {
    let mut inside = false;
    let mut j = pts.len() - 1;
    for i in 0..pts.len() {
        let (xi, yi) = pts[i];
        let (xj, yj) = pts[j];
        if (yi > v) != (yj > v) && u < (xj - xi) * (v - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

/// A hash of (seed, a, b) to [-1, 1): the pixel noise, fixed per pixel.
fn hash_noise(seed: u64, a: u64, b: u64) -> f32 {
    let mut r =
        Rng::new(seed ^ a.wrapping_mul(0x9E37_79B9) ^ b.wrapping_mul(0x85EB_CA6B_0000_0001));
    r.uniform() * 2.0 - 1.0
}

impl Scene {
    /// Rasterises at `res x res`: the image (supersampled, so edges are antialiased) and
    /// the mask (`label` where at least half of a pixel is covered, 0 elsewhere).
    pub fn render(&self, res: usize, label: u8) -> (RgbImage, Vec<u8>) {
        let mut img = RgbImage::new(res, res);
        let mut mask = vec![0u8; res * res];
        let ss = if res <= 64 {
            4
        } else if res <= 160 {
            3
        } else {
            2
        };
        let (sin, cos) = self.angle.sin_cos();
        let plane = res * res;
        let px = 1.0 / res as f32;
        let reach = self.radius * 1.5 + px;
        for y in 0..res {
            for x in 0..res {
                let fx = (x as f32 + 0.5) * px;
                let fy = (y as f32 + 0.5) * px;
                let mut hits = 0;
                if (fx - self.cx).abs() <= reach && (fy - self.cy).abs() <= reach {
                    for sy in 0..ss {
                        for sx in 0..ss {
                            let qx = (x as f32 + (sx as f32 + 0.5) / ss as f32) * px;
                            let qy = (y as f32 + (sy as f32 + 0.5) / ss as f32) * px;
                            let dx = (qx - self.cx) / self.radius;
                            let dy = (qy - self.cy) / self.radius;
                            let u = dx * cos + dy * sin;
                            let v = -dx * sin + dy * cos;
                            if inside(self.shape, u, v) {
                                hits += 1;
                            }
                        }
                    }
                }
                let cover = hits as f32 / (ss * ss) as f32;
                if 2 * hits >= ss * ss {
                    mask[y * res + x] = label;
                }
                let n = 0.015 * hash_noise(self.noise, (y * res + x) as u64, res as u64);
                for c in 0..3 {
                    let v = self.background[c] * (1.0 - cover) + self.colour[c] * cover;
                    img.data[c * plane + y * res + x] = (v + n).clamp(0.0, 1.0);
                }
            }
        }
        (img, mask)
    }
}

/// One generated image with its description.
#[derive(Clone, Debug)]
struct Shape {
    scene: Scene,
    caption: String,
    /// Answers to `QUESTIONS`, in order.
    answers: [String; 4],
}

/// The questions a generated image answers (PE-lang's question/answer pairs in
/// miniature): its shape, colour, position (one of `POSITIONS`) and size.
pub const QUESTIONS: [&str; 4] = [
    "what shape is it?",
    "what colour is it?",
    "where is it?",
    "how big is it?",
];

/// `synthetic_shapes(count, seed, classes, held_out)`: sample `i` of the whole set is
/// fixed by `(seed, i)`. Train holds indices `0..round((1 - held_out) * count)`, HeldOut
/// the rest; `get(idx)` indexes within the split.
#[derive(Clone, Debug)]
pub struct SyntheticShapes {
    seed: u64,
    classes: usize,
    /// The split's first index in the whole set, and its length.
    start: usize,
    len: usize,
}

impl SyntheticShapes {
    pub fn new(
        count: usize,
        seed: u64,
        classes: usize,
        held_out: f64,
        split: Split,
    ) -> Result<SyntheticShapes, DataError> {
        if classes < 2 || classes > SHAPES.len() {
            return Err(DataError::arg(
                "synthetic_shapes",
                format!("`classes` must be 2 to {}, not {classes}", SHAPES.len()),
            ));
        }
        if !(0.0..=1.0).contains(&held_out) {
            return Err(DataError::arg(
                "synthetic_shapes",
                format!("`held_out` must be a fraction in [0, 1], not {held_out}"),
            ));
        }
        let train = (((1.0 - held_out) * count as f64).round() as usize).min(count);
        let (start, len) = match split {
            Split::Train => (0, train),
            Split::HeldOut => (train, count - train),
        };
        Ok(SyntheticShapes {
            seed,
            classes,
            start,
            len,
        })
    }

    fn shape(&self, idx: usize) -> Result<Shape, DataError> {
        if idx >= self.len {
            return Err(DataError::OutOfRange { idx, len: self.len });
        }
        let mut r = Rng::derive(self.seed, (self.start + idx) as u64);
        let shape = r.below(self.classes);
        let (colour_name, base) = COLOURS[r.below(COLOURS.len())];
        let mut colour = base;
        for c in &mut colour {
            *c = (*c + r.range(-0.04, 0.04)).clamp(0.0, 1.0);
        }
        let large = r.below(2) == 1;
        let radius = if large {
            r.range(0.22, 0.28)
        } else {
            r.range(0.14, 0.18)
        };
        let region = r.below(9);
        let cx = REGION_CENTRES[region % 3] + r.range(-0.05, 0.05);
        let cy = REGION_CENTRES[region / 3] + r.range(-0.05, 0.05);
        let angle = r.range(-0.26, 0.26);
        let grey = r.range(0.0, 0.4);
        let mut background = [grey; 3];
        for c in &mut background {
            *c = (*c + r.range(-0.03, 0.03)).clamp(0.0, 1.0);
        }
        let bg_name = if grey < 0.13 {
            "black"
        } else if grey < 0.27 {
            "dark grey"
        } else {
            "grey"
        };
        let size = if large { "large" } else { "small" };
        let name = SHAPES[shape];
        let pos = POSITIONS[region];
        // Every caption names the shape; colour, size and position only some of the time.
        // Were they always named, colour, size and position together would tell most
        // images of a batch apart, and the shape would never need to be learned (measured:
        // colour 100%, shape at chance after the tiny core run).
        let caption = match r.below(8) {
            0 => format!("a {name}"),
            1 => format!("a picture of a {name}"),
            2 => format!("a {size} {name}"),
            3 => format!("a {colour_name} {name}"),
            4 => format!("a {size} {colour_name} {name}"),
            5 => format!("a {name} at the {pos}"),
            6 => format!("a photo of a {colour_name} {name}"),
            _ => format!("a {name} on a {bg_name} background"),
        };
        Ok(Shape {
            scene: Scene {
                shape,
                colour,
                cx,
                cy,
                radius,
                angle,
                background,
                noise: r.next_u64(),
            },
            caption,
            answers: [
                name.to_string(),
                colour_name.to_string(),
                pos.to_string(),
                size.to_string(),
            ],
        })
    }

    /// The vector description of sample `idx` of the split.
    pub fn scene(&self, idx: usize) -> Result<Scene, DataError> {
        Ok(self.shape(idx)?.scene)
    }
}

/// Prompts for a shape name: the bare name first, then the colour and size forms of
/// the training captions (so a small text tower sees familiar text at zero-shot time).
pub(crate) fn shape_prompts(name: &str) -> Vec<String> {
    let mut out = vec![format!("a {name}")];
    out.extend(COLOURS.iter().map(|(c, _)| format!("a {c} {name}")));
    out.extend(["small", "large"].iter().map(|s| format!("a {s} {name}")));
    out
}

impl Dataset for SyntheticShapes {
    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, idx: usize, res: usize, _rng: &mut Rng) -> Result<Sample, DataError> {
        let s = self.shape(idx)?;
        let (img, mask) = s.scene.render(res, s.scene.shape as u8 + 1);
        Ok(Sample {
            image: img.normalised(),
            height: res,
            width: res,
            text: s.caption,
            label: Some(s.scene.shape),
            mask: Some(mask),
        })
    }

    fn text(&self, idx: usize) -> Result<String, DataError> {
        Ok(self.shape(idx)?.caption)
    }

    fn questions(&self, idx: usize) -> Result<Vec<(String, String)>, DataError> {
        let answers = self.shape(idx)?.answers;
        Ok(QUESTIONS
            .iter()
            .zip(answers)
            .map(|(q, a)| (q.to_string(), a))
            .collect())
    }

    fn class_names(&self) -> Option<Vec<String>> {
        Some(
            SHAPES[..self.classes]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        )
    }

    fn prompts(&self, c: usize) -> Vec<String> {
        shape_prompts(SHAPES.get(c).copied().unwrap_or("shape"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(count: usize, seed: u64, classes: usize, split: Split) -> SyntheticShapes {
        SyntheticShapes::new(count, seed, classes, 0.1, split).unwrap()
    }

    fn get(d: &SyntheticShapes, i: usize, res: usize) -> Sample {
        d.get(i, res, &mut Rng::new(0)).unwrap()
    }

    #[test]
    fn deterministic_per_seed() {
        let a = ds(100, 1, 8, Split::Train);
        let b = ds(100, 1, 8, Split::Train);
        let c = ds(100, 2, 8, Split::Train);
        for i in 0..10 {
            assert_eq!(get(&a, i, 32), get(&b, i, 32));
        }
        let differ = (0..10)
            .filter(|&i| get(&a, i, 32).image != get(&c, i, 32).image)
            .count();
        assert_eq!(differ, 10);
        let captions: Vec<String> = (0..10).map(|i| get(&a, i, 8).text).collect();
        let other: Vec<String> = (0..10).map(|i| get(&c, i, 8).text).collect();
        assert_ne!(captions, other);
    }

    #[test]
    fn same_picture_at_every_resolution() {
        let d = ds(200, 5, 8, Split::Train);
        for i in 0..20 {
            let lo = get(&d, i, 32);
            let hi = get(&d, i, 64);
            assert_eq!(lo.text, hi.text);
            assert_eq!(lo.label, hi.label);
            assert_eq!(lo.image.len(), 3 * 32 * 32);
            assert_eq!((hi.height, hi.width), (64, 64));
            let frac = |s: &Sample| {
                let m = s.mask.as_ref().unwrap();
                m.iter().filter(|&&v| v > 0).count() as f64 / m.len() as f64
            };
            let (a, b) = (frac(&lo), frac(&hi));
            assert!(a > 0.0 && b > 0.0, "sample {i}: the shape is visible");
            assert!(
                (a - b).abs() < 0.02 + 0.25 * b,
                "sample {i}: mask fraction {a} at 32 px vs {b} at 64 px"
            );
        }
    }

    #[test]
    fn masks_cover_the_drawn_shape() {
        let d = ds(100, 9, 8, Split::Train);
        let res = 48;
        for i in 0..20 {
            let s = get(&d, i, res);
            let scene = d.scene(i).unwrap();
            let mask = s.mask.unwrap();
            let label = s.label.unwrap() as u8 + 1;
            assert!(mask.iter().all(|&m| m == 0 || m == label));
            let bg: Vec<f32> = scene.background.iter().map(|v| (v - 0.5) / 0.5).collect();
            let plane = res * res;
            let dist = |p: usize| {
                (0..3)
                    .map(|c| (s.image[c * plane + p] - bg[c]).abs())
                    .fold(0.0, f32::max)
            };
            let fg: Vec<f32> = (0..plane).filter(|&p| mask[p] > 0).map(dist).collect();
            let back: Vec<f32> = (0..plane).filter(|&p| mask[p] == 0).map(dist).collect();
            let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len().max(1) as f32;
            // Masked pixels carry the shape's colour; the rest are background (but for
            // antialiased edge pixels): in [-1, 1] units, noise is 0.03.
            assert!(mean(&fg) > 0.3, "sample {i}: foreground {}", mean(&fg));
            assert!(fg.iter().all(|&v| v > 0.1), "sample {i}");
            let far = back.iter().filter(|&&v| v < 0.05).count();
            assert!(far as f64 > 0.9 * back.len() as f64, "sample {i}");
        }
    }

    #[test]
    fn splits_are_disjoint_and_sized() {
        let train = ds(100, 4, 8, Split::Train);
        let held = ds(100, 4, 8, Split::HeldOut);
        assert_eq!((train.len(), held.len()), (90, 10));
        assert!(held.get(10, 16, &mut Rng::new(0)).is_err());
        let train_imgs: Vec<Vec<f32>> = (0..90).map(|i| get(&train, i, 16).image).collect();
        for i in 0..10 {
            assert!(!train_imgs.contains(&get(&held, i, 16).image));
        }
        let none = SyntheticShapes::new(10, 0, 8, 0.0, Split::HeldOut).unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn classes_are_balanced_and_named_in_captions() {
        let d = ds(2000, 11, 8, Split::Train);
        let mut counts = [0usize; 8];
        for i in 0..d.len() {
            let s = d.shape(i).unwrap();
            counts[s.scene.shape] += 1;
            assert!(s.caption.contains(SHAPES[s.scene.shape]), "{}", s.caption);
            assert_eq!(d.text(i).unwrap(), s.caption);
        }
        let mean = d.len() as f64 / 8.0;
        for c in counts {
            assert!((c as f64 - mean).abs() < 0.25 * mean, "{counts:?}");
        }
        assert_eq!(d.class_names().unwrap()[2], "triangle");
        assert_eq!(d.prompt(2), "a triangle");
        assert!(d.prompts(2).contains(&"a red triangle".to_string()));
    }

    #[test]
    fn sixteen_classes_at_most() {
        assert!(SyntheticShapes::new(10, 0, 16, 0.1, Split::Train).is_ok());
        let err = SyntheticShapes::new(10, 0, 17, 0.1, Split::Train).unwrap_err();
        assert!(err.to_string().contains("classes"), "{err}");
        // Every kind draws something of its own.
        let masks: Vec<Vec<u8>> = (0..16)
            .map(|k| {
                let scene = Scene {
                    shape: k,
                    colour: [1.0; 3],
                    cx: 0.5,
                    cy: 0.5,
                    radius: 0.4,
                    angle: 0.0,
                    background: [0.0; 3],
                    noise: 0,
                };
                scene.render(32, 1).1
            })
            .collect();
        for (a, ma) in masks.iter().enumerate() {
            assert!(ma.iter().any(|&m| m > 0), "{}", SHAPES[a]);
            for mb in &masks[a + 1..] {
                assert_ne!(ma, mb);
            }
        }
    }
}
