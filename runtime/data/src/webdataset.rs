//! `webdataset(shards, image, text, augment)`: image-text pairs from tar shards, grouped
//! by key, indexed at open time and read by offset on `get`.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::augment::Augment;
use crate::error::DataError;
use crate::image::RgbImage;
use crate::image_text::sample;
use crate::rng::Rng;
use crate::screen::{Bad, OnBad};
use crate::{real_split, string, Dataset, Sample, Split};
use pexc_compiler::lower::plan::Ctor;

/// Expands brace patterns: numeric ranges `{00000..00099}` (the width of a zero-padded
/// bound is kept) and lists `{a,b,c}`, several per pattern (every combination, in order).
pub fn expand_braces(pattern: &str) -> Result<Vec<String>, DataError> {
    let bad = |m: &str| DataError::arg("webdataset", format!("shards `{pattern}`: {m}"));
    let Some(open) = pattern.find('{') else {
        if pattern.contains('}') {
            return Err(bad("a `}` without its `{`"));
        }
        return Ok(vec![pattern.to_string()]);
    };
    let close = pattern[open..]
        .find('}')
        .map(|i| open + i)
        .ok_or_else(|| bad("a `{` without its `}`"))?;
    let (head, body, tail) = (
        &pattern[..open],
        &pattern[open + 1..close],
        &pattern[close + 1..],
    );
    let choices: Vec<String> = if let Some((a, b)) = body.split_once("..") {
        let lo: u64 = a
            .trim()
            .parse()
            .map_err(|_| bad("a range needs whole numbers: {0..9}"))?;
        let hi: u64 = b
            .trim()
            .parse()
            .map_err(|_| bad("a range needs whole numbers: {0..9}"))?;
        if hi < lo {
            return Err(bad("a range must go up: {lo..hi} with lo <= hi"));
        }
        if hi - lo >= 10_000_000 {
            return Err(bad("a range of more than ten million shards"));
        }
        let width = if a.trim().len() > 1 && a.trim().starts_with('0') {
            a.trim().len()
        } else {
            0
        };
        (lo..=hi).map(|i| format!("{i:0width$}")).collect()
    } else {
        body.split(',').map(str::to_string).collect()
    };
    let rest = expand_braces(tail)?;
    let mut out = Vec::with_capacity(choices.len() * rest.len());
    for c in &choices {
        for r in &rest {
            out.push(format!("{head}{c}{r}"));
        }
    }
    Ok(out)
}

/// WebDataset's key and extension of a member path: the key is the path up to the first
/// dot of its file name, the extension everything after that dot.
pub fn split_key(path: &str) -> Option<(&str, &str)> {
    let name_start = path.rfind('/').map_or(0, |i| i + 1);
    let dot = path[name_start..].find('.')? + name_start;
    Some((&path[..dot], &path[dot + 1..]))
}

/// Where a sample's image lies: the shard, and the member's bytes within it.
#[derive(Clone, Debug)]
struct Item {
    shard: usize,
    key: String,
    offset: u64,
    size: u64,
    text: String,
}

/// The samples of one split (see `real_split`), in shard then member order.
pub struct WebDataset {
    shards: Vec<PathBuf>,
    items: Vec<Item>,
    augment: Vec<Augment>,
    skipped: Vec<Bad>,
}

fn matches(ext: &str, wanted: &str) -> bool {
    // `jpg;png`: any of several extensions, as in WebDataset's own decoders.
    wanted.split(';').any(|w| w.eq_ignore_ascii_case(ext))
}

impl WebDataset {
    pub fn open(c: &Ctor, split: Split) -> Result<WebDataset, DataError> {
        let shards: Vec<PathBuf> = expand_braces(string(c, "shards", None)?)?
            .into_iter()
            .map(PathBuf::from)
            .collect();
        let image = string(c, "image", Some("jpg"))?;
        let text = string(c, "text", Some("txt"))?;
        let on_bad = OnBad::of(c)?;
        let mut items = Vec::new();
        let mut skipped = Vec::new();
        for (s, path) in shards.iter().enumerate() {
            let before = items.len();
            let mut bad_keys = Vec::new();
            // A shard that cannot be read, or that yields nothing (a wrong extension, a
            // file that is not a shard): bad as a whole.
            let whole = match index_shard(s, path, image, text, &mut items, &mut bad_keys) {
                Err(e) => Some(e),
                Ok(()) if items.len() == before && bad_keys.is_empty() => Some(DataError::Shard {
                    shard: path.clone(),
                    message: format!(
                        "the shard holds no samples (no `.{image}` member with a `.{text}` member)"
                    ),
                }),
                Ok(()) => None,
            };
            if let Some(e) = whole {
                if on_bad == OnBad::Skip && crate::screen::is_bad_sample(&e) {
                    skipped.push(Bad {
                        name: path.display().to_string(),
                        reason: e.to_string(),
                    });
                } else {
                    return Err(e);
                }
            }
            for b in bad_keys {
                if on_bad == OnBad::Error {
                    return Err(DataError::Sample {
                        shard: path.clone(),
                        key: b.name,
                        message: b.reason,
                    });
                }
                skipped.push(Bad {
                    name: format!("{}:{}", path.display(), b.name),
                    reason: b.reason,
                });
            }
        }
        let range = real_split(items.len(), split);
        Ok(WebDataset {
            shards,
            items: items[range].to_vec(),
            augment: Augment::list(c)?,
            skipped: if split == Split::Train {
                skipped
            } else {
                Vec::new()
            },
        })
    }
}

/// A key's image member (offset, size) and caption (or why it is not text), as far as
/// seen.
type Members = (Option<(u64, u64)>, Option<Result<String, String>>);

/// Lists one shard's samples: the image member's position and the caption's text.
/// Keys without one of their members, or with a caption that is not text, go to `bad`
/// (name: the key); an error is about the shard as a whole.
fn index_shard(
    s: usize,
    path: &Path,
    image: &str,
    text: &str,
    items: &mut Vec<Item>,
    bad: &mut Vec<Bad>,
) -> Result<(), DataError> {
    let tar_err = |e: std::io::Error| {
        DataError::io(
            path,
            std::io::Error::new(e.kind(), format!("not a readable tar file: {e}")),
        )
    };
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    // key -> (image (offset, size), caption), and the keys in first-seen order.
    let mut found: HashMap<String, Members> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    for entry in archive.entries().map_err(tar_err)? {
        let mut entry = entry.map_err(tar_err)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .map_err(tar_err)?
            .to_string_lossy()
            .into_owned();
        let Some((key, ext)) = split_key(&name) else {
            continue;
        };
        let (key, ext) = (key.to_string(), ext.to_string());
        let is_image = matches(&ext, image);
        let is_text = matches(&ext, text);
        if !is_image && !is_text {
            continue;
        }
        let slot = found.entry(key.clone()).or_insert_with(|| {
            order.push(key.clone());
            (None, None)
        });
        if is_image {
            slot.0 = Some((entry.raw_file_position(), entry.size()));
        } else {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(tar_err)?;
            slot.1 = Some(match String::from_utf8(bytes) {
                Ok(caption) => Ok(caption.trim().to_string()),
                Err(_) => Err(format!("`{name}` is not UTF-8 text")),
            });
        }
    }
    for key in order {
        let Some((img, caption)) = found.remove(&key) else {
            continue;
        };
        let problem = match (&img, &caption) {
            (None, _) => Some(format!("no `.{image}` image member")),
            (_, None) => Some(format!("no `.{text}` caption member")),
            (_, Some(Err(m))) => Some(m.clone()),
            (_, Some(Ok(c))) if c.is_empty() => Some(format!("the `.{text}` caption is empty")),
            _ => None,
        };
        let (Some((offset, size)), Some(Ok(text)), None) = (img, caption, &problem) else {
            bad.push(Bad {
                name: key,
                reason: problem.unwrap_or_default(),
            });
            continue;
        };
        items.push(Item {
            shard: s,
            key,
            offset,
            size,
            text,
        });
    }
    Ok(())
}

impl Dataset for WebDataset {
    fn len(&self) -> usize {
        self.items.len()
    }

    fn get(&self, idx: usize, res: usize, rng: &mut Rng) -> Result<Sample, DataError> {
        let it = self.items.get(idx).ok_or(DataError::OutOfRange {
            idx,
            len: self.items.len(),
        })?;
        let path = &self.shards[it.shard];
        let bad = |e: std::io::Error| DataError::Sample {
            shard: path.clone(),
            key: it.key.clone(),
            message: format!("cannot read the image: {e}"),
        };
        let mut f = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
        f.seek(SeekFrom::Start(it.offset)).map_err(bad)?;
        // `take`, not a buffer of the header's size: a corrupt size must not allocate.
        let mut bytes = Vec::new();
        f.take(it.size).read_to_end(&mut bytes).map_err(bad)?;
        if bytes.len() as u64 != it.size {
            return Err(bad(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the shard ends inside the image",
            )));
        }
        let img = RgbImage::decode(&bytes, &format!("{}:{}", path.display(), it.key))?;
        Ok(sample(img, it.text.clone(), &self.augment, res, rng))
    }

    fn text(&self, idx: usize) -> Result<String, DataError> {
        self.items
            .get(idx)
            .map(|it| it.text.clone())
            .ok_or(DataError::OutOfRange {
                idx,
                len: self.items.len(),
            })
    }

    fn name(&self, idx: usize) -> String {
        match self.items.get(idx) {
            Some(it) => format!("{}:{}", self.shards[it.shard].display(), it.key),
            None => format!("sample {idx}"),
        }
    }

    fn skipped_at_open(&self) -> Vec<Bad> {
        self.skipped.clone()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::image_text::tests::{jpeg, png};
    use crate::test_ctor;
    use pexc_compiler::lower::plan::Arg;

    /// Appends a member to a test shard.
    pub(crate) fn add(b: &mut tar::Builder<std::fs::File>, name: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    }

    fn ctor(shards: &str) -> Ctor {
        test_ctor(
            "webdataset",
            &[
                ("shards", Arg::Str(shards.into())),
                ("image", Arg::Str("jpg;png".into())),
                ("text", Arg::Str("txt".into())),
                ("augment", Arg::List(vec![])),
            ],
        )
    }

    #[test]
    fn brace_ranges_keep_zero_padding() {
        assert_eq!(
            expand_braces("data/{00000..00002}.tar").unwrap(),
            ["data/00000.tar", "data/00001.tar", "data/00002.tar"]
        );
        assert_eq!(
            expand_braces("s{8..10}.tar").unwrap(),
            ["s8.tar", "s9.tar", "s10.tar"]
        );
        assert_eq!(
            expand_braces("{a,b}-{0..1}").unwrap(),
            ["a-0", "a-1", "b-0", "b-1"]
        );
        assert_eq!(expand_braces("plain.tar").unwrap(), ["plain.tar"]);
        assert!(expand_braces("x{1..").is_err());
        assert!(expand_braces("x{5..1}").is_err());
        assert_eq!(split_key("dir/000.seg.png"), Some(("dir/000", "seg.png")));
        assert_eq!(split_key("a.b/c.txt"), Some(("a.b/c", "txt")));
    }

    #[test]
    fn reads_samples_grouped_by_key_across_shards() {
        let dir = tempfile::tempdir().unwrap();
        for s in 0..2 {
            let f = std::fs::File::create(dir.path().join(format!("shard-{s:03}.tar"))).unwrap();
            let mut b = tar::Builder::new(f);
            for k in 0..3 {
                let key = format!("s{s}/k{k}");
                add(
                    &mut b,
                    &format!("{key}.txt"),
                    format!("caption {s} {k}\n").as_bytes(),
                );
                if k == 1 {
                    add(
                        &mut b,
                        &format!("{key}.png"),
                        &png(6, 6, |_, _| [255, 255, 255]),
                    );
                } else {
                    add(&mut b, &format!("{key}.jpg"), &jpeg(8, 8, [0, 0, 0]));
                }
                add(&mut b, &format!("{key}.json"), b"{}");
            }
            b.finish().unwrap();
        }
        let pattern = format!("{}/shard-{{000..001}}.tar", dir.path().display());
        let ds = WebDataset::open(&ctor(&pattern), Split::Train).unwrap();
        assert_eq!(ds.len(), 6);
        let s = ds.get(4, 4, &mut Rng::new(0)).unwrap();
        assert_eq!(s.text, "caption 1 1");
        assert!(
            s.image.iter().all(|v| (v - 1.0).abs() < 1e-5),
            "white PNG member"
        );
        let s = ds.get(0, 4, &mut Rng::new(0)).unwrap();
        assert_eq!(s.text, "caption 0 0");
        assert!(
            s.image.iter().all(|v| (v + 1.0).abs() < 0.05),
            "black JPEG member"
        );
        assert_eq!(ds.text(5).unwrap(), "caption 1 2");
        assert_eq!(
            WebDataset::open(&ctor(&pattern), Split::HeldOut)
                .unwrap()
                .len(),
            0
        );
    }

    #[test]
    fn missing_members_and_shards_name_the_shard() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("one.tar");
        let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
        add(&mut b, "x/0001.jpg", &jpeg(4, 4, [9, 9, 9]));
        add(&mut b, "x/0002.jpg", &jpeg(4, 4, [9, 9, 9]));
        add(&mut b, "x/0002.txt", b"fine");
        b.finish().unwrap();
        let err = WebDataset::open(&ctor(&path.display().to_string()), Split::Train)
            .err()
            .unwrap();
        let msg = err.to_string();
        assert!(
            msg.contains("one.tar") && msg.contains("x/0001") && msg.contains(".txt"),
            "{msg}"
        );
        let err = WebDataset::open(
            &ctor(&format!("{}/none-{{0..1}}.tar", dir.path().display())),
            Split::Train,
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("none-0.tar"), "{err}");
        std::fs::write(dir.path().join("junk.tar"), vec![7u8; 1500]).unwrap();
        // Garbage is an error naming the shard (or, where no header parses, no samples).
        let junk = WebDataset::open(
            &ctor(&dir.path().join("junk.tar").display().to_string()),
            Split::Train,
        );
        match junk {
            Ok(ds) => assert_eq!(ds.len(), 0),
            Err(e) => assert!(e.to_string().contains("junk.tar"), "{e}"),
        }
    }
}
