//! `image_text(root, captions, augment)`: PNG/JPEG files with captions from a JSONL file.

use std::path::{Component, Path, PathBuf};

use crate::augment::{self, Augment};
use crate::error::DataError;
use crate::image::RgbImage;
use crate::rng::Rng;
use crate::screen::{Bad, OnBad};
use crate::{real_split, string, Dataset, Sample, Split};
use pexc_compiler::lower::plan::Ctor;

/// An image-text pair on disk.
#[derive(Clone, Debug)]
pub struct Entry {
    pub image: PathBuf,
    pub text: String,
}

/// The pairs of one split (see `real_split`), decoded on `get`.
pub struct ImageText {
    entries: Vec<Entry>,
    augment: Vec<Augment>,
    skipped: Vec<Bad>,
}

/// Where the captions file is. The language says `captions` is relative to `root`, but
/// the compiler rebases every path onto the `.pex` file's folder, so both `root` = D/r
/// and `captions` = D/c arrive prefixed by the same D. Tried in order: `captions` as
/// given, `root/captions`, and `root/c` with the common prefix D removed.
pub fn captions_path(root: &Path, captions: &Path) -> Result<PathBuf, DataError> {
    let mut tried = vec![captions.to_path_buf(), root.join(captions)];
    let r: Vec<Component> = root.components().collect();
    let c: Vec<Component> = captions.components().collect();
    let common = r.iter().zip(&c).take_while(|(a, b)| a == b).count();
    if common > 0 {
        tried.push(root.join(c[common..].iter().collect::<PathBuf>()));
    }
    for p in &tried {
        if p.is_file() {
            return Ok(p.clone());
        }
    }
    Err(DataError::io(
        captions,
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "no such captions file (looked for {})",
                tried
                    .iter()
                    .map(|p| format!("`{}`", p.display()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    ))
}

/// Reads a JSONL of `{"image": path, "text": caption}`; blank lines are skipped, image
/// paths are relative to `root`. `key` is the name of the path field (`image`, `video`). A
/// line that is not such an object, or whose caption is missing or empty, is an error, or
/// with `OnBad::Skip` is left out and returned among the bad lines.
pub fn read_jsonl(
    path: &Path,
    root: &Path,
    key: &str,
    on_bad: OnBad,
) -> Result<(Vec<Entry>, Vec<Bad>), DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match parse_line(line, root, key) {
            Ok(e) => out.push(e),
            Err(message) if on_bad == OnBad::Skip => skipped.push(Bad {
                name: format!("{}:{}", path.display(), i + 1),
                reason: message,
            }),
            Err(message) => {
                return Err(DataError::Json {
                    path: path.to_path_buf(),
                    line: i + 1,
                    message,
                })
            }
        }
    }
    Ok((out, skipped))
}

/// One JSONL line as an entry, or what is wrong with it.
fn parse_line(line: &str, root: &Path, key: &str) -> Result<Entry, String> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let field = |name: &str| -> Result<String, String> {
        match v.get(name) {
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(format!("`{name}` must be a string")),
            None => Err(format!(
                "expected an object with `{key}` and `text`; `{name}` is missing"
            )),
        }
    };
    let image = field(key)?;
    let text = field("text")?;
    if text.trim().is_empty() {
        return Err("the caption is empty".into());
    }
    Ok(Entry {
        image: root.join(image),
        text,
    })
}

impl ImageText {
    pub fn open(c: &Ctor, split: Split) -> Result<ImageText, DataError> {
        let root = PathBuf::from(string(c, "root", None)?);
        let captions = captions_path(&root, Path::new(string(c, "captions", None)?))?;
        let on_bad = OnBad::of(c)?;
        let (entries, skipped) = read_jsonl(&captions, &root, "image", on_bad)?;
        let range = real_split(entries.len(), split);
        Ok(ImageText {
            entries: entries[range].to_vec(),
            augment: Augment::list(c)?,
            // Lines left out belong to no split; the training split reports them.
            skipped: if split == Split::Train {
                skipped
            } else {
                Vec::new()
            },
        })
    }

    /// A dataset over given pairs (all of them, no split).
    pub fn from_entries(entries: Vec<Entry>, augment: Vec<Augment>) -> ImageText {
        ImageText {
            entries,
            augment,
            skipped: Vec::new(),
        }
    }
}

/// Decoded, augmented and resized: the sample every real source produces.
pub(crate) fn sample(
    img: RgbImage,
    text: String,
    augs: &[Augment],
    res: usize,
    rng: &mut Rng,
) -> Sample {
    let img = augment::apply(augs, img, res, rng);
    Sample {
        image: img.normalised(),
        height: res,
        width: res,
        text,
        label: None,
        mask: None,
    }
}

impl Dataset for ImageText {
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn get(&self, idx: usize, res: usize, rng: &mut Rng) -> Result<Sample, DataError> {
        let e = self.entries.get(idx).ok_or(DataError::OutOfRange {
            idx,
            len: self.entries.len(),
        })?;
        let img = RgbImage::open(&e.image)?;
        Ok(sample(img, e.text.clone(), &self.augment, res, rng))
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

    fn name(&self, idx: usize) -> String {
        self.entries.get(idx).map_or_else(
            || format!("sample {idx}"),
            |e| e.image.display().to_string(),
        )
    }

    fn skipped_at_open(&self) -> Vec<Bad> {
        self.skipped.clone()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::test_ctor;
    use pexc_compiler::lower::plan::Arg;

    /// PNG bytes of a w x h image whose pixel (x, y) is `f(x, y)`.
    pub(crate) fn png(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb(f(x, y)));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    pub(crate) fn jpeg(w: u32, h: u32, rgb: [u8; 3]) -> Vec<u8> {
        let img = image::RgbImage::from_pixel(w, h, image::Rgb(rgb));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
        out.into_inner()
    }

    fn ctor(root: &Path, captions: &Path) -> Ctor {
        test_ctor(
            "image_text",
            &[
                ("root", Arg::Str(root.display().to_string())),
                ("captions", Arg::Str(captions.display().to_string())),
                ("augment", Arg::List(vec![])),
            ],
        )
    }

    #[test]
    fn reads_png_and_jpeg_with_normalised_pixels() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("imgs");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        // A black 4x4 image with a white top-left pixel.
        let white_corner = png(
            4,
            4,
            |x, y| if x == 0 && y == 0 { [255; 3] } else { [0; 3] },
        );
        std::fs::write(root.join("a.png"), white_corner).unwrap();
        std::fs::write(root.join("sub/b.jpg"), jpeg(16, 8, [200, 40, 40])).unwrap();
        std::fs::write(
            root.join("captions.jsonl"),
            "{\"image\": \"a.png\", \"text\": \"a white dot\"}\n\n{\"image\": \"sub/b.jpg\", \"text\": \"red\"}\n",
        )
        .unwrap();
        let ds = ImageText::open(&ctor(&root, &root.join("captions.jsonl")), Split::Train).unwrap();
        assert_eq!(ds.len(), 2);
        let a = ds.get(0, 4, &mut Rng::new(0)).unwrap();
        assert_eq!(a.text, "a white dot");
        assert_eq!((a.height, a.width, a.image.len()), (4, 4, 48));
        for c in 0..3 {
            assert!((a.image[c * 16] - 1.0).abs() < 1e-5, "white is 1.0");
            assert!((a.image[c * 16 + 5] + 1.0).abs() < 1e-5, "black is -1.0");
        }
        assert!(a.mask.is_none() && a.label.is_none());
        // The JPEG, squashed from 16x8 to 8x8: its colour survives.
        let b = ds.get(1, 8, &mut Rng::new(0)).unwrap();
        let expect = [200.0, 40.0, 40.0].map(|v: f32| (v / 255.0 - 0.5) / 0.5);
        for (c, want) in expect.iter().enumerate() {
            let v = b.image[c * 64 + 27];
            assert!((v - want).abs() < 0.08, "channel {c}: {v} vs {want}");
        }
        // As the compiler writes the paths: both rebased onto the .pex file's folder.
        let rebased = ImageText::open(
            &ctor(&root, &dir.path().join("captions.jsonl")),
            Split::Train,
        )
        .unwrap();
        assert_eq!(rebased.len(), 2);
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let full = png(8, 8, |x, _| [x as u8 * 30; 3]);
        std::fs::write(root.join("cut.png"), &full[..full.len() / 2]).unwrap();
        std::fs::write(
            root.join("ok.jsonl"),
            "{\"image\": \"cut.png\", \"text\": \"half\"}\n",
        )
        .unwrap();
        let ds = ImageText::open(&ctor(root, &root.join("ok.jsonl")), Split::Train).unwrap();
        let err = ds.get(0, 8, &mut Rng::new(0)).unwrap_err();
        assert!(err.to_string().contains("cut.png"), "{err}");
        let err = ds.get(5, 8, &mut Rng::new(0)).unwrap_err();
        assert!(matches!(err, DataError::OutOfRange { idx: 5, len: 1 }));

        std::fs::write(
            root.join("bad.jsonl"),
            "{\"image\": \"cut.png\", \"text\": \"x\"}\n{\"image\": \"cut.png\", \"text\": \n",
        )
        .unwrap();
        let err = ImageText::open(&ctor(root, &root.join("bad.jsonl")), Split::Train)
            .err()
            .unwrap();
        assert!(err.to_string().contains("bad.jsonl:2"), "{err}");
        std::fs::write(
            root.join("nofield.jsonl"),
            "{\"path\": \"cut.png\", \"text\": \"x\"}\n",
        )
        .unwrap();
        let err = ImageText::open(&ctor(root, &root.join("nofield.jsonl")), Split::Train)
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("nofield.jsonl:1") && err.to_string().contains("image"),
            "{err}"
        );
        let err = ImageText::open(&ctor(root, &root.join("absent.jsonl")), Split::Train)
            .err()
            .unwrap();
        assert!(err.to_string().contains("absent.jsonl"), "{err}");
        std::fs::write(root.join("not_image.png"), b"hello").unwrap();
        let err = crate::image::RgbImage::open(&root.join("not_image.png")).unwrap_err();
        assert!(err.to_string().contains("not_image.png"), "{err}");
    }
}
