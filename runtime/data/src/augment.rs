//! Augmentations (`random_resized_crop`, `aspect_jitter`, `color_jitter`, `hflip`),
//! applied in order with draws from the sample's `Rng`.

use crate::error::DataError;
use crate::image::{Rect, RgbImage};
use crate::rng::Rng;
use pexc_compiler::lower::plan::{Arg, Ctor};

/// One augmentation, with torchvision's semantics.
#[derive(Clone, Debug, PartialEq)]
pub enum Augment {
    /// Crop a random area fraction in `scale` and aspect ratio in `ratio` (log-uniform);
    /// 10 tries, then a centre crop; the crop becomes the output resolution.
    RandomResizedCrop {
        scale: (f64, f64),
        ratio: (f64, f64),
    },
    /// Stretch by an aspect ratio drawn log-uniformly from `range`, keeping the area.
    AspectJitter { range: (f64, f64) },
    /// Brightness, contrast and saturation factors in `[max(0, 1-v), 1+v]`, a hue shift in
    /// `[-hue, hue]` turns, applied in a random order; a zero leaves that property alone.
    ColorJitter {
        brightness: f64,
        contrast: f64,
        saturation: f64,
        hue: f64,
    },
    /// Mirror left to right with probability `p`.
    HFlip { p: f64 },
}

impl Augment {
    pub fn from_ctor(c: &Ctor) -> Result<Augment, DataError> {
        let pair = |name: &str, default: (f64, f64)| -> Result<(f64, f64), DataError> {
            match c.arg(name) {
                None => Ok(default),
                Some(_) => {
                    let (a, b) = c.pair(name).ok_or_else(|| {
                        DataError::arg(&c.ctor, format!("`{name}` must be a pair of numbers"))
                    })?;
                    if !(a.is_finite() && b.is_finite() && a > 0.0 && a <= b) {
                        return Err(DataError::arg(
                            &c.ctor,
                            format!("`{name}` must be ({{lo}}, {{hi}}) with 0 < lo <= hi, not ({a}, {b})"),
                        ));
                    }
                    Ok((a, b))
                }
            }
        };
        let num = |name: &str, default: f64| -> Result<f64, DataError> {
            let v = match c.arg(name) {
                None => default,
                Some(_) => c
                    .float(name)
                    .ok_or_else(|| DataError::arg(&c.ctor, format!("`{name}` must be a number")))?,
            };
            if !v.is_finite() || v < 0.0 {
                return Err(DataError::arg(
                    &c.ctor,
                    format!("`{name}` must be >= 0, not {v}"),
                ));
            }
            Ok(v)
        };
        Ok(match c.ctor.as_str() {
            "random_resized_crop" => Augment::RandomResizedCrop {
                scale: pair("scale", (0.08, 1.0))?,
                ratio: pair("ratio", (0.75, 4.0 / 3.0))?,
            },
            "aspect_jitter" => Augment::AspectJitter {
                range: pair("range", (0.75, 1.33))?,
            },
            "color_jitter" => Augment::ColorJitter {
                brightness: num("brightness", 0.0)?,
                contrast: num("contrast", 0.0)?,
                saturation: num("saturation", 0.0)?,
                hue: num("hue", 0.0)?.min(0.5),
            },
            "hflip" => Augment::HFlip {
                p: num("p", 0.5)?.min(1.0),
            },
            other => {
                return Err(DataError::Unsupported(format!(
                    "`{other}` is not an augmentation this runtime implements \
                     (random_resized_crop, aspect_jitter, color_jitter, hflip)"
                )))
            }
        })
    }

    /// The `augment` list of a data constructor (absent: none).
    pub fn list(data: &Ctor) -> Result<Vec<Augment>, DataError> {
        let Some(arg) = data.arg("augment") else {
            return Ok(Vec::new());
        };
        let Arg::List(items) = arg else {
            return Err(DataError::arg(
                &data.ctor,
                "`augment` must be a list of augmentations",
            ));
        };
        items
            .iter()
            .map(|a| match a {
                Arg::Call(c) => Augment::from_ctor(c),
                _ => Err(DataError::arg(
                    &data.ctor,
                    "`augment` must hold augmentation calls such as hflip(0.5)",
                )),
            })
            .collect()
    }
}

/// The image as the geometric augmentations so far see it: a rectangle of the source,
/// stretched to `w x h` and maybe mirrored. Kept lazy so that a large photo is resampled
/// once, straight to the output size, whatever the chain of crops and stretches.
struct View {
    src: RgbImage,
    rect: Rect,
    w: usize,
    h: usize,
    flip: bool,
}

impl View {
    fn new(src: RgbImage) -> View {
        View {
            rect: src.full(),
            w: src.width,
            h: src.height,
            flip: false,
            src,
        }
    }

    /// The source rectangle under the view's pixels `[x, x+w) x [y, y+h)`.
    fn sub(&self, x: f64, y: f64, w: f64, h: f64) -> Rect {
        let sx = self.rect.w / self.w as f64;
        let sy = self.rect.h / self.h as f64;
        let x = if self.flip { self.w as f64 - x - w } else { x };
        Rect {
            x: self.rect.x + x * sx,
            y: self.rect.y + y * sy,
            w: w * sx,
            h: h * sy,
        }
    }

    fn render(&self, w: usize, h: usize) -> RgbImage {
        self.src.resample(self.rect, w, h, self.flip)
    }
}

/// Applies `augs` in order to `img`, then squash-resizes to `res x res`.
pub fn apply(augs: &[Augment], img: RgbImage, res: usize, rng: &mut Rng) -> RgbImage {
    let mut view = View::new(img);
    for aug in augs {
        match *aug {
            Augment::RandomResizedCrop { scale, ratio } => {
                let (x, y, w, h) = crop_params(view.w, view.h, scale, ratio, rng);
                view.rect = view.sub(x as f64, y as f64, w as f64, h as f64);
                // torchvision resizes the crop to the output size.
                view.w = res.max(1);
                view.h = res.max(1);
            }
            Augment::AspectJitter { range } => {
                let r = log_uniform(range, rng).sqrt();
                view.w = ((view.w as f64 * r).round() as usize).max(1);
                view.h = ((view.h as f64 / r).round() as usize).max(1);
            }
            Augment::HFlip { p } => {
                if (rng.uniform() as f64) < p {
                    view.flip = !view.flip;
                }
            }
            Augment::ColorJitter {
                brightness,
                contrast,
                saturation,
                hue,
            } => {
                // Colour needs pixels: materialise at the view's current size.
                let mut pixels = view.render(view.w, view.h);
                color_jitter(&mut pixels, brightness, contrast, saturation, hue, rng);
                view = View::new(pixels);
            }
        }
    }
    // Already the output: skip a resample (which would only blur nothing).
    let untouched = !view.flip && view.rect == view.src.full();
    if untouched && view.src.width == res && view.src.height == res {
        return view.src;
    }
    view.render(res, res)
}

fn log_uniform((lo, hi): (f64, f64), rng: &mut Rng) -> f64 {
    (lo.ln() + (hi.ln() - lo.ln()) * rng.uniform() as f64).exp()
}

/// torchvision's `RandomResizedCrop.get_params`: `(x, y, w, h)` in pixels.
pub fn crop_params(
    width: usize,
    height: usize,
    scale: (f64, f64),
    ratio: (f64, f64),
    rng: &mut Rng,
) -> (usize, usize, usize, usize) {
    let area = (width * height) as f64;
    for _ in 0..10 {
        let target = area * (scale.0 + (scale.1 - scale.0) * rng.uniform() as f64);
        let aspect = log_uniform(ratio, rng);
        let w = (target * aspect).sqrt().round() as usize;
        let h = (target / aspect).sqrt().round() as usize;
        if 0 < w && w <= width && 0 < h && h <= height {
            let y = rng.below(height - h + 1);
            let x = rng.below(width - w + 1);
            return (x, y, w, h);
        }
    }
    // Centre crop at the nearest allowed aspect ratio.
    let in_ratio = width as f64 / height as f64;
    let (w, h) = if in_ratio < ratio.0 {
        (
            width,
            ((width as f64 / ratio.0).round() as usize).clamp(1, height),
        )
    } else if in_ratio > ratio.1 {
        (
            ((height as f64 * ratio.1).round() as usize).clamp(1, width),
            height,
        )
    } else {
        (width, height)
    };
    ((width - w) / 2, (height - h) / 2, w, h)
}

fn factor(v: f64, rng: &mut Rng) -> Option<f32> {
    if v <= 0.0 {
        return None;
    }
    let lo = (1.0 - v).max(0.0) as f32;
    let hi = (1.0 + v) as f32;
    Some(lo + (hi - lo) * rng.uniform())
}

fn gray(r: f32, g: f32, b: f32) -> f32 {
    0.299 * r + 0.587 * g + 0.114 * b
}

/// torchvision's `ColorJitter`: the four adjustments in a random order, each with a
/// factor drawn when it is enabled.
pub fn color_jitter(
    img: &mut RgbImage,
    brightness: f64,
    contrast: f64,
    saturation: f64,
    hue: f64,
    rng: &mut Rng,
) {
    let mut order = [0usize, 1, 2, 3];
    for i in (1..4).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let b = factor(brightness, rng);
    let c = factor(contrast, rng);
    let s = factor(saturation, rng);
    let h = (hue > 0.0).then(|| ((rng.uniform() as f64 * 2.0 - 1.0) * hue) as f32);
    let n = img.width * img.height;
    let (r, rest) = img.data.split_at_mut(n);
    let (g, bl) = rest.split_at_mut(n);
    for op in order {
        match op {
            0 => {
                if let Some(f) = b {
                    for v in r.iter_mut().chain(g.iter_mut()).chain(bl.iter_mut()) {
                        *v = (*v * f).clamp(0.0, 1.0);
                    }
                }
            }
            1 => {
                if let Some(f) = c {
                    let mean =
                        (0..n).map(|i| gray(r[i], g[i], bl[i])).sum::<f32>() / n.max(1) as f32;
                    for v in r.iter_mut().chain(g.iter_mut()).chain(bl.iter_mut()) {
                        *v = (f * *v + (1.0 - f) * mean).clamp(0.0, 1.0);
                    }
                }
            }
            2 => {
                if let Some(f) = s {
                    for i in 0..n {
                        let y = gray(r[i], g[i], bl[i]);
                        r[i] = (f * r[i] + (1.0 - f) * y).clamp(0.0, 1.0);
                        g[i] = (f * g[i] + (1.0 - f) * y).clamp(0.0, 1.0);
                        bl[i] = (f * bl[i] + (1.0 - f) * y).clamp(0.0, 1.0);
                    }
                }
            }
            _ => {
                if let Some(shift) = h {
                    for i in 0..n {
                        let (hh, ss, vv) = rgb_to_hsv(r[i], g[i], bl[i]);
                        let (nr, ng, nb) = hsv_to_rgb((hh + shift).rem_euclid(1.0), ss, vv);
                        r[i] = nr;
                        g[i] = ng;
                        bl[i] = nb;
                    }
                }
            }
        }
    }
}

fn rgb_to_hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let d = max - min;
    let s = if max > 0.0 { d / max } else { 0.0 };
    let h = if d <= 0.0 {
        0.0
    } else if max == r {
        ((g - b) / d).rem_euclid(6.0) / 6.0
    } else if max == g {
        ((b - r) / d + 2.0) / 6.0
    } else {
        ((r - g) / d + 4.0) / 6.0
    };
    (h, s, max)
}

fn hsv_to_rgb(h: f32, s: f32, v: f32) -> (f32, f32, f32) {
    let h6 = h * 6.0;
    let i = h6.floor();
    let f = h6 - i;
    let p = v * (1.0 - s);
    let q = v * (1.0 - s * f);
    let t = v * (1.0 - s * (1.0 - f));
    match (i as i32).rem_euclid(6) {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_ctor;

    fn noise_image(w: usize, h: usize, seed: u64) -> RgbImage {
        let mut r = Rng::new(seed);
        let mut img = RgbImage::new(w, h);
        img.data.iter_mut().for_each(|v| *v = r.uniform());
        img
    }

    #[test]
    fn hflip_mirrors() {
        let img = noise_image(6, 4, 1);
        let out = apply(
            &[Augment::HFlip { p: 1.0 }],
            img.clone(),
            6,
            &mut Rng::new(0),
        );
        // Squashed to 6x6 (from 6x4): compare against flipping the squashed original.
        let mut expect = img.resize(6, 6);
        expect.hflip();
        for (a, b) in out.data.iter().zip(&expect.data) {
            assert!((a - b).abs() < 1e-5);
        }
        let never = apply(
            &[Augment::HFlip { p: 0.0 }],
            img.clone(),
            6,
            &mut Rng::new(0),
        );
        assert_eq!(never, img.resize(6, 6));
    }

    #[test]
    fn random_resized_crop_stays_in_bounds() {
        let mut rng = Rng::new(3);
        for i in 0..500 {
            let (w, h) = (20 + i % 37, 15 + i % 23);
            let (x, y, cw, ch) = crop_params(w, h, (0.08, 1.0), (0.75, 4.0 / 3.0), &mut rng);
            assert!(
                cw > 0 && ch > 0 && x + cw <= w && y + ch <= h,
                "{w}x{h}: {x},{y} {cw}x{ch}"
            );
        }
        // No crop fits the ratio of a very thin image: the centre-crop fallback.
        let (x, y, cw, ch) = crop_params(100, 2, (0.9, 1.0), (1.0, 1.0), &mut rng);
        assert!(x + cw <= 100 && y + ch <= 2 && cw >= 1);
        let augs = [Augment::RandomResizedCrop {
            scale: (0.08, 1.0),
            ratio: (0.75, 4.0 / 3.0),
        }];
        let out = apply(&augs, noise_image(50, 30, 2), 16, &mut rng);
        assert_eq!((out.width, out.height, out.data.len()), (16, 16, 3 * 256));
        assert!(out.data.iter().all(|v| (0.0..=1.0).contains(v)));
        // A full-size crop of an image already at the output size changes nothing.
        let full = [Augment::RandomResizedCrop {
            scale: (1.0, 1.0),
            ratio: (1.0, 1.0),
        }];
        let img = noise_image(16, 16, 4);
        let same = apply(&full, img.clone(), 16, &mut rng);
        for (a, b) in same.data.iter().zip(&img.data) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn colour_jitter_of_zero_is_the_identity() {
        let img = noise_image(9, 7, 5);
        let zero = Augment::ColorJitter {
            brightness: 0.0,
            contrast: 0.0,
            saturation: 0.0,
            hue: 0.0,
        };
        let out = apply(&[zero], img.clone(), 9, &mut Rng::new(1));
        let mut expect = img.resize(9, 9);
        color_jitter(&mut expect, 0.0, 0.0, 0.0, 0.0, &mut Rng::new(1));
        assert_eq!(out, expect);
        let mut same = img.clone();
        color_jitter(&mut same, 0.0, 0.0, 0.0, 0.0, &mut Rng::new(1));
        assert_eq!(same, img);
        let mut changed = img.clone();
        color_jitter(&mut changed, 0.4, 0.4, 0.4, 0.1, &mut Rng::new(1));
        assert_ne!(changed, img);
        assert!(changed.data.iter().all(|v| (0.0..=1.0).contains(v)));
        // Hue round trip: a shift of zero through HSV gives the colour back.
        let (h, s, v) = rgb_to_hsv(0.2, 0.7, 0.4);
        let (r, g, b) = hsv_to_rgb(h, s, v);
        assert!((r - 0.2).abs() < 1e-5 && (g - 0.7).abs() < 1e-5 && (b - 0.4).abs() < 1e-5);
    }

    #[test]
    fn aspect_jitter_keeps_output_size_and_plans_parse() {
        let out = apply(
            &[Augment::AspectJitter { range: (0.5, 2.0) }],
            noise_image(20, 20, 6),
            12,
            &mut Rng::new(2),
        );
        assert_eq!((out.width, out.height), (12, 12));
        let list = test_ctor(
            "image_text",
            &[(
                "augment",
                Arg::List(vec![
                    Arg::Call(test_ctor(
                        "aspect_jitter",
                        &[("range", Arg::List(vec![Arg::Float(0.75), Arg::Float(1.33)]))],
                    )),
                    Arg::Call(test_ctor(
                        "random_resized_crop",
                        &[("scale", Arg::List(vec![Arg::Float(0.08), Arg::Int(1)]))],
                    )),
                    Arg::Call(test_ctor(
                        "color_jitter",
                        &[
                            ("brightness", Arg::Float(0.32)),
                            ("saturation", Arg::Float(0.32)),
                        ],
                    )),
                    Arg::Call(test_ctor("hflip", &[("p", Arg::Float(0.5))])),
                ]),
            )],
        );
        let augs = Augment::list(&list).unwrap();
        assert_eq!(augs.len(), 4);
        assert_eq!(augs[3], Augment::HFlip { p: 0.5 });
        let a = apply(&augs, noise_image(40, 30, 7), 16, &mut Rng::new(9));
        let b = apply(&augs, noise_image(40, 30, 7), 16, &mut Rng::new(9));
        assert_eq!(a, b, "the same seed gives the same augmentation");
        let bad = test_ctor(
            "x",
            &[(
                "augment",
                Arg::List(vec![Arg::Call(test_ctor("mixup", &[]))]),
            )],
        );
        assert!(Augment::list(&bad)
            .unwrap_err()
            .to_string()
            .contains("mixup"));
    }
}
