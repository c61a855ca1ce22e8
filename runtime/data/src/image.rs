//! `RgbImage`: a planar RGB f32 image in [0, 1], with decoding, resampling, flipping and
//! the model's normalisation.

use crate::error::DataError;
use image::ImageEncoder;

/// Three planes (R, G, B) of `height x width` values in [0, 1]. Planar, because the model
/// wants CHW and resampling runs one channel at a time.
#[derive(Clone, Debug, PartialEq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    /// `3 * height * width` values, channel-major.
    pub data: Vec<f32>,
}

/// A rectangle in pixel units: `x`, `y` its top-left corner (pixel edges, not centres).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

impl RgbImage {
    pub fn new(width: usize, height: usize) -> RgbImage {
        RgbImage {
            width,
            height,
            data: vec![0.0; 3 * width * height],
        }
    }

    /// Decodes PNG or JPEG bytes (format from the content, not the name). `name` is the
    /// file's name for the error.
    pub fn decode(bytes: &[u8], name: &str) -> Result<RgbImage, DataError> {
        let err = |message: String| DataError::Image {
            path: name.to_string(),
            message,
        };
        // A JPEG cut short decodes "successfully", its missing rows grey: refuse it.
        if bytes.starts_with(&[0xFF, 0xD8]) && !jpeg_is_whole(bytes) {
            return Err(err(
                "the JPEG is cut short (no end-of-image marker after its last scan)".into(),
            ));
        }
        let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| err(e.to_string()))?;
        if reader.format().is_none() {
            return Err(err("not a PNG or JPEG file".into()));
        }
        let img = reader.decode().map_err(|e| err(e.to_string()))?.to_rgb8();
        let (w, h) = (img.width() as usize, img.height() as usize);
        if w == 0 || h == 0 {
            return Err(err("the image is empty".into()));
        }
        let mut out = RgbImage::new(w, h);
        let plane = w * h;
        for (i, px) in img.pixels().enumerate() {
            for c in 0..3 {
                out.data[c * plane + i] = px.0[c] as f32 / 255.0;
            }
        }
        Ok(out)
    }

    /// PNG bytes of a normalised CHW image (`(pixel - 0.5) / 0.5`, as `normalised`
    /// gives): the inverse of `decode` up to 8-bit rounding.
    pub fn encode_png(
        normalised: &[f32],
        width: usize,
        height: usize,
    ) -> Result<Vec<u8>, DataError> {
        let plane = width * height;
        if normalised.len() != 3 * plane {
            return Err(DataError::Loader(format!(
                "a {width}x{height} image needs {} values, not {}",
                3 * plane,
                normalised.len()
            )));
        }
        let mut rgb = Vec::with_capacity(3 * plane);
        for i in 0..plane {
            for c in 0..3 {
                let v = normalised[c * plane + i] * 0.5 + 0.5;
                rgb.push((v.clamp(0.0, 1.0) * 255.0).round() as u8);
            }
        }
        let mut out = Vec::new();
        image::codecs::png::PngEncoder::new(&mut out)
            .write_image(
                &rgb,
                width as u32,
                height as u32,
                image::ExtendedColorType::Rgb8,
            )
            .map_err(|e| DataError::Loader(format!("PNG encoding: {e}")))?;
        Ok(out)
    }

    /// Reads and decodes an image file.
    pub fn open(path: &std::path::Path) -> Result<RgbImage, DataError> {
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        RgbImage::decode(&bytes, &path.display().to_string())
    }

    pub fn full(&self) -> Rect {
        Rect {
            x: 0.0,
            y: 0.0,
            w: self.width as f64,
            h: self.height as f64,
        }
    }

    pub fn get(&self, c: usize, y: usize, x: usize) -> f32 {
        self.data[(c * self.height + y) * self.width + x]
    }

    /// Mirrors left to right.
    pub fn hflip(&mut self) {
        for row in self.data.chunks_mut(self.width.max(1)) {
            row.reverse();
        }
    }

    /// Squash-resizes to `width x height`.
    pub fn resize(&self, width: usize, height: usize) -> RgbImage {
        self.resample(self.full(), width, height, false)
    }

    /// Resamples `rect` of this image to `out_w x out_h`, mirrored when `flip`. A
    /// separable triangle filter whose support widens with the downscale factor (PIL's
    /// bilinear): plain bilinear when enlarging, antialiased when shrinking, so that a
    /// large photo squashed to 32 px is not aliased noise.
    pub fn resample(&self, rect: Rect, out_w: usize, out_h: usize, flip: bool) -> RgbImage {
        let mut out = RgbImage::new(out_w, out_h);
        if self.width == 0 || self.height == 0 || out_w == 0 || out_h == 0 {
            return out;
        }
        let xs = weights(rect.x, rect.w, out_w, self.width);
        let ys = weights(rect.y, rect.h, out_h, self.height);
        // Horizontal pass into a (height x out_w) buffer per channel, then vertical.
        let mut tmp = vec![0.0f32; self.height * out_w];
        for c in 0..3 {
            let plane =
                &self.data[c * self.width * self.height..(c + 1) * self.width * self.height];
            for y in 0..self.height {
                let row = &plane[y * self.width..(y + 1) * self.width];
                for (ox, (start, ws)) in xs.iter().enumerate() {
                    let v: f32 = ws.iter().enumerate().map(|(k, w)| row[start + k] * w).sum();
                    let ox = if flip { out_w - 1 - ox } else { ox };
                    tmp[y * out_w + ox] = v;
                }
            }
            let dst = &mut out.data[c * out_w * out_h..(c + 1) * out_w * out_h];
            for (oy, (start, ws)) in ys.iter().enumerate() {
                let row = &mut dst[oy * out_w..(oy + 1) * out_w];
                for (k, w) in ws.iter().enumerate() {
                    let src = &tmp[(start + k) * out_w..(start + k + 1) * out_w];
                    for (d, s) in row.iter_mut().zip(src) {
                        *d += s * w;
                    }
                }
            }
        }
        for v in &mut out.data {
            *v = v.clamp(0.0, 1.0);
        }
        out
    }

    /// The model's input: CHW, `(v - 0.5) / 0.5`, i.e. `(pixel/255 - 0.5) / 0.5`.
    pub fn normalised(&self) -> Vec<f32> {
        self.data.iter().map(|v| (v - 0.5) / 0.5).collect()
    }
}

/// Whether a JPEG's end-of-image marker (FF D9) follows its last start-of-scan (FF DA).
/// Inside entropy-coded data every FF byte is stuffed (FF 00), so neither marker can
/// appear there by chance; an EXIF thumbnail's markers come before the main scan.
fn jpeg_is_whole(bytes: &[u8]) -> bool {
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    let end = bytes.windows(2).rposition(|w| w == [0xFF, 0xD9]);
    matches!((last_scan, end), (Some(s), Some(e)) if e > s)
}

/// For each output pixel along one axis: the first source pixel and the filter weights
/// (normalised to sum 1) over the source span `[start, start + len)`.
fn weights(start: f64, len: f64, out: usize, src: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = (len / out as f64).max(1e-9);
    let support = scale.max(1.0);
    (0..out)
        .map(|o| {
            let centre = start + (o as f64 + 0.5) * scale;
            let lo = ((centre - support).floor().max(0.0) as usize).min(src - 1);
            let hi = ((centre + support).ceil().max(0.0) as usize).clamp(lo + 1, src);
            let mut ws: Vec<f64> = (lo..hi)
                .map(|i| {
                    let d = ((i as f64 + 0.5 - centre) / support).abs();
                    (1.0 - d).max(0.0)
                })
                .collect();
            let sum: f64 = ws.iter().sum();
            if sum <= 0.0 {
                // A span entirely outside the image: the nearest edge pixel.
                ws.iter_mut().for_each(|w| *w = 0.0);
                let near = ((centre.max(0.0) as usize).min(src - 1)).clamp(lo, hi - 1);
                ws[near - lo] = 1.0;
            } else {
                ws.iter_mut().for_each(|w| *w /= sum);
            }
            (lo, ws.into_iter().map(|w| w as f32).collect())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(w: usize, h: usize) -> RgbImage {
        let mut img = RgbImage::new(w, h);
        for c in 0..3 {
            for y in 0..h {
                for x in 0..w {
                    img.data[(c * h + y) * w + x] = x as f32 / (w - 1) as f32;
                }
            }
        }
        img
    }

    #[test]
    fn a_cut_jpeg_is_an_error_not_grey_rows() {
        let img = image::RgbImage::from_fn(64, 64, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 4) as u8, ((x + y) * 2) as u8])
        });
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
        let whole = out.into_inner();
        assert!(RgbImage::decode(&whole, "whole.jpg").is_ok());
        // With trailing bytes after the end marker (some cameras append data): fine.
        let mut padded = whole.clone();
        padded.extend_from_slice(&[0; 16]);
        assert!(RgbImage::decode(&padded, "padded.jpg").is_ok());
        for cut in [0.5, 0.7, 0.9, 0.99] {
            let n = (whole.len() as f64 * cut) as usize;
            let e = RgbImage::decode(&whole[..n], "cut.jpg").unwrap_err();
            assert!(e.to_string().contains("cut.jpg"), "{e}");
        }
        let e = RgbImage::decode(&whole[..whole.len() - 2], "no_eoi.jpg").unwrap_err();
        assert!(e.to_string().contains("cut short"), "{e}");
    }

    #[test]
    fn identity_resize_and_constant_images() {
        let img = ramp(7, 5);
        let same = img.resize(7, 5);
        for (a, b) in img.data.iter().zip(&same.data) {
            assert!((a - b).abs() < 1e-5);
        }
        let mut flat = RgbImage::new(9, 13);
        flat.data.iter_mut().for_each(|v| *v = 0.25);
        for size in [(1, 1), (4, 4), (20, 3)] {
            let r = flat.resize(size.0, size.1);
            assert!(r.data.iter().all(|v| (v - 0.25).abs() < 1e-5));
        }
    }

    #[test]
    fn downscale_keeps_ramp_monotone_and_flip_mirrors() {
        let small = ramp(64, 8).resize(8, 8);
        for x in 1..8 {
            assert!(small.get(0, 0, x) > small.get(0, 0, x - 1));
        }
        let flipped = ramp(64, 8).resample(
            Rect {
                x: 0.0,
                y: 0.0,
                w: 64.0,
                h: 8.0,
            },
            8,
            8,
            true,
        );
        for x in 0..8 {
            assert!((flipped.get(1, 3, x) - small.get(1, 3, 7 - x)).abs() < 1e-6);
        }
    }
}
