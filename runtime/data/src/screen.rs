//! Bad data: what happens to a sample that cannot be used (an image that does not decode
//! or is cut short, a missing caption or image member, a shard with no samples, a caption
//! longer than the text tower's context). The data source's `on_bad` argument decides:
//! `"error"` (the default) stops with an error naming the file, `"skip"` leaves the sample
//! out and counts it. Nothing is changed silently: every skipped sample is counted and the
//! first few are named in the run's summary.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use crate::error::DataError;
use crate::rng::Rng;
use crate::tokenizer::Tokenizer;
use crate::{Dataset, Sample};
use pexc_compiler::lower::plan::Ctor;

/// How many bad samples a summary names.
pub const FIRST: usize = 5;
/// A skipped sample is replaced by the next good one; this many bad ones in a row is an
/// error (the data is broken, not a few files of it).
pub const MAX_IN_A_ROW: usize = 64;

/// What to do with a bad sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnBad {
    Error,
    Skip,
}

impl OnBad {
    /// The `on_bad` argument of a data source (`"error"` when absent).
    pub fn of(c: &Ctor) -> Result<OnBad, DataError> {
        match c.arg("on_bad") {
            None => Ok(OnBad::Error),
            Some(_) => match c.str("on_bad") {
                Some("error") => Ok(OnBad::Error),
                Some("skip") => Ok(OnBad::Skip),
                _ => Err(DataError::arg(
                    &c.ctor,
                    "`on_bad` must be \"error\" or \"skip\"",
                )),
            },
        }
    }
}

/// One bad sample: what it is (a file, a shard and key, a JSONL line) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bad {
    pub name: String,
    pub reason: String,
}

/// The bad samples a source met: how many (each counted once), the first few by name, and
/// how many captions were cut to the context where no `on_bad` rule applies.
#[derive(Debug, Default)]
pub struct BadLog {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    seen: BTreeSet<String>,
    first: Vec<Bad>,
    truncated: BTreeSet<String>,
}

impl BadLog {
    /// Records a bad sample (once per name).
    pub fn record(&self, bad: Bad) {
        if let Ok(mut g) = self.inner.lock() {
            if g.seen.insert(bad.name.clone()) && g.first.len() < FIRST {
                g.first.push(bad);
            }
        }
    }

    /// Records a caption cut to the context (once per name).
    pub fn record_truncated(&self, name: String) {
        if let Ok(mut g) = self.inner.lock() {
            g.truncated.insert(name);
        }
    }

    pub fn count(&self) -> usize {
        self.inner.lock().map_or(0, |g| g.seen.len())
    }

    pub fn truncated(&self) -> usize {
        self.inner.lock().map_or(0, |g| g.truncated.len())
    }

    /// The first few bad samples, in the order they were met.
    pub fn first(&self) -> Vec<Bad> {
        self.inner.lock().map_or(Vec::new(), |g| g.first.clone())
    }

    /// One line for the run's summary; `None` when nothing was skipped or cut.
    pub fn summary(&self) -> Option<String> {
        let (n, cut) = (self.count(), self.truncated());
        if n == 0 && cut == 0 {
            return None;
        }
        let mut parts = Vec::new();
        if n > 0 {
            let names: Vec<String> = self
                .first()
                .iter()
                .map(|b| format!("{} ({})", b.name, b.reason))
                .collect();
            let more = if n > names.len() { ", ..." } else { "" };
            parts.push(format!(
                "{n} bad sample{} skipped: {}{more}",
                if n == 1 { "" } else { "s" },
                names.join("; ")
            ));
        }
        if cut > 0 {
            parts.push(format!(
                "{cut} caption{} longer than the context, cut to it",
                if cut == 1 { "" } else { "s" }
            ));
        }
        Some(parts.join("; "))
    }

    /// As JSON, for the run directory: `{"skipped": n, "first": [{name, reason}], "truncated": n}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "skipped": self.count(),
            "first": self.first().iter().map(|b| serde_json::json!({"name": b.name, "reason": b.reason})).collect::<Vec<_>>(),
            "truncated": self.truncated(),
        })
    }
}

/// Whether an error is about one sample (skippable), not about the source as a whole.
pub fn is_bad_sample(e: &DataError) -> bool {
    matches!(
        e,
        DataError::Io { .. }
            | DataError::Image { .. }
            | DataError::Sample { .. }
            | DataError::Shard { .. }
            | DataError::Caption { .. }
    )
}

/// A data source seen through its `on_bad` rule: captions that do not fit the context and
/// samples that do not load are errors, or are skipped (replaced by the next good sample,
/// deterministically, so a resumed run loads what an uninterrupted one did) and counted.
/// Sources without the rule (generated data) never fail to load; their captions that do not
/// fit are cut to the context and counted.
pub struct Screened {
    inner: Arc<dyn Dataset>,
    on_bad: Option<OnBad>,
    context: Option<(Tokenizer, usize)>,
    log: Arc<BadLog>,
}

impl Screened {
    /// `on_bad`: the source's rule (`None` for a source without one); `context`: the
    /// tokenizer and context length captions must fit.
    pub fn new(
        inner: Arc<dyn Dataset>,
        on_bad: Option<OnBad>,
        context: Option<(Tokenizer, usize)>,
        log: Arc<BadLog>,
    ) -> Screened {
        for b in inner.skipped_at_open() {
            log.record(b);
        }
        Screened {
            inner,
            on_bad,
            context,
            log,
        }
    }

    pub fn log(&self) -> &Arc<BadLog> {
        &self.log
    }

    /// Sample `idx`, or the error that makes it bad.
    fn load(&self, idx: usize, res: usize, rng: &mut Rng) -> Result<Sample, DataError> {
        if let Some((tok, context)) = &self.context {
            let text = self.inner.text(idx)?;
            if tok.truncates(&text, *context) {
                match self.on_bad {
                    Some(_) => {
                        return Err(DataError::Caption {
                            name: self.inner.name(idx),
                            message: format!(
                                "the caption is longer than the context of {context} tokens"
                            ),
                        })
                    }
                    None => self.log.record_truncated(self.inner.name(idx)),
                }
            }
        }
        self.inner.get(idx, res, rng)
    }

    /// Sample `idx`; `Ok(None)` when it is bad and skipped (and recorded).
    pub fn get_good(
        &self,
        idx: usize,
        res: usize,
        rng: &mut Rng,
    ) -> Result<Option<Sample>, DataError> {
        match self.load(idx, res, rng) {
            Ok(s) => Ok(Some(s)),
            Err(e) if self.on_bad == Some(OnBad::Skip) && is_bad_sample(&e) => {
                self.log.record(Bad {
                    name: self.inner.name(idx),
                    reason: e.to_string(),
                });
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

impl Dataset for Screened {
    fn len(&self) -> usize {
        self.inner.len()
    }

    /// Sample `idx`, or when it is bad and skipped the next good one after it (wrapping),
    /// drawn with the same augmentation stream.
    fn get(&self, idx: usize, res: usize, rng: &mut Rng) -> Result<Sample, DataError> {
        let n = self.inner.len();
        if idx >= n {
            return Err(DataError::OutOfRange { idx, len: n });
        }
        let start = rng.clone();
        for k in 0..MAX_IN_A_ROW.min(n) {
            let mut r = start.clone();
            if let Some(s) = self.get_good((idx + k) % n, res, &mut r)? {
                *rng = r;
                return Ok(s);
            }
        }
        Err(DataError::Loader(format!(
            "{} bad samples in a row from sample {idx} ({}): the data looks broken, not just a few files of it",
            MAX_IN_A_ROW.min(n),
            self.inner.name(idx)
        )))
    }

    fn text(&self, idx: usize) -> Result<String, DataError> {
        self.inner.text(idx)
    }

    fn name(&self, idx: usize) -> String {
        self.inner.name(idx)
    }

    fn questions(&self, idx: usize) -> Result<Vec<(String, String)>, DataError> {
        self.inner.questions(idx)
    }

    fn class_names(&self) -> Option<Vec<String>> {
        self.inner.class_names()
    }

    fn prompt(&self, c: usize) -> String {
        self.inner.prompt(c)
    }

    fn prompts(&self, c: usize) -> Vec<String> {
        self.inner.prompts(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image_text::tests::{jpeg, png};
    use crate::image_text::ImageText;
    use crate::test_ctor;
    use crate::webdataset::tests::add;
    use crate::webdataset::WebDataset;
    use crate::Split;
    use pexc_compiler::lower::plan::Arg;
    use std::path::Path;

    fn image_text(root: &Path, on_bad: Option<&str>) -> Ctor {
        let mut args = vec![
            ("root", Arg::Str(root.display().to_string())),
            (
                "captions",
                Arg::Str(root.join("captions.jsonl").display().to_string()),
            ),
            ("augment", Arg::List(vec![])),
        ];
        if let Some(o) = on_bad {
            args.push(("on_bad", Arg::Str(o.into())));
        }
        test_ctor("image_text", &args)
    }

    /// A folder of 12 captioned images, five of them bad in the four ways of the issue
    /// (a cut PNG, bytes that are no image, a line without caption, a caption too long
    /// for a context of 16) and one more (an image file that does not exist).
    fn bad_folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let good = png(6, 6, |x, y| [(x * 40) as u8, (y * 40) as u8, 90]);
        let mut lines = Vec::new();
        for i in 0..12 {
            let name = format!("{i:02}.png");
            let (bytes, text): (Vec<u8>, String) = match i {
                1 => (good[..good.len() / 2].to_vec(), "a cut image".into()),
                3 => (b"GIF89a? no, just text".to_vec(), "not an image".into()),
                7 => (
                    jpeg(5, 5, [1, 2, 3]),
                    "a long caption with many many words in it, far too many".into(),
                ),
                _ => (good.clone(), format!("picture {i}")),
            };
            std::fs::write(root.join(&name), bytes).unwrap();
            lines.push(match i {
                5 => format!("{{\"image\": \"{name}\"}}"),
                9 => {
                    "{\"image\": \"gone.png\", \"text\": \"a file that is not there\"}".to_string()
                }
                _ => format!("{{\"image\": \"{name}\", \"text\": \"{text}\"}}"),
            });
        }
        std::fs::write(root.join("captions.jsonl"), lines.join("\n")).unwrap();
        dir
    }

    fn tokenizer() -> Tokenizer {
        Tokenizer::bytes_bpe(&["picture", "a cut image", "not an image"], 300)
    }

    #[test]
    fn on_bad_is_read_from_the_constructor() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            OnBad::of(&image_text(d.path(), None)).unwrap(),
            OnBad::Error
        );
        assert_eq!(
            OnBad::of(&image_text(d.path(), Some("skip"))).unwrap(),
            OnBad::Skip
        );
        let e = OnBad::of(&image_text(d.path(), Some("ignore"))).unwrap_err();
        assert!(e.to_string().contains("on_bad"), "{e}");
    }

    #[test]
    fn skip_counts_every_bad_sample_and_names_the_first() {
        let dir = bad_folder();
        let c = image_text(dir.path(), Some("skip"));
        let raw: Arc<dyn Dataset> = Arc::new(ImageText::open(&c, Split::Train).unwrap());
        // 12 lines, one without caption left out at open; 11 with a held-out tenth of 1.
        assert_eq!(raw.len(), 10);
        let log = Arc::new(BadLog::default());
        let ds = Screened::new(raw, Some(OnBad::Skip), Some((tokenizer(), 16)), log.clone());
        assert_eq!(log.count(), 1, "the line without caption");
        let mut texts = Vec::new();
        for i in 0..ds.len() {
            let s = ds.get(i, 4, &mut Rng::new(i as u64)).unwrap();
            texts.push(s.text);
        }
        // Each bad sample is replaced by the next good one; nothing bad comes through.
        assert!(texts.iter().all(|t| t.starts_with("picture")), "{texts:?}");
        assert_eq!(log.count(), 5, "{:?}", log.first());
        let names: Vec<String> = log.first().iter().map(|b| b.name.clone()).collect();
        for want in ["captions.jsonl:6", "01.png", "03.png", "07.png", "gone.png"] {
            assert!(
                names.iter().any(|n| n.ends_with(want)),
                "{want} in {names:?}"
            );
        }
        let summary = log.summary().unwrap();
        assert!(summary.starts_with("5 bad samples skipped"), "{summary}");
        assert!(
            summary.contains("longer than the context of 16"),
            "{summary}"
        );
        // Loading again records nothing new: each bad sample counts once.
        let _ = ds.get(1, 4, &mut Rng::new(0)).unwrap();
        assert_eq!(log.count(), 5);
        assert_eq!(log.to_json()["skipped"], 5);
    }

    #[test]
    fn a_skipped_sample_is_replaced_deterministically() {
        let dir = bad_folder();
        let c = image_text(dir.path(), Some("skip"));
        let open = || {
            let raw: Arc<dyn Dataset> = Arc::new(ImageText::open(&c, Split::Train).unwrap());
            Screened::new(
                raw,
                Some(OnBad::Skip),
                Some((tokenizer(), 16)),
                Arc::default(),
            )
        };
        let (a, b) = (open(), open());
        // Sample 1 is the cut PNG: it becomes sample 2, with sample 1's augmentation seed.
        let x = a.get(1, 4, &mut Rng::new(42)).unwrap();
        let y = b.get(1, 4, &mut Rng::new(42)).unwrap();
        assert_eq!(x, y);
        assert_eq!(x.text, "picture 2");
    }

    #[test]
    fn error_stops_at_the_first_bad_sample_naming_it() {
        let dir = bad_folder();
        // The line without caption, when the source is opened.
        let e = ImageText::open(&image_text(dir.path(), None), Split::Train)
            .err()
            .unwrap();
        assert!(e.to_string().contains("captions.jsonl:6"), "{e}");
        // Without that line: the cut image, when it is loaded.
        let text = std::fs::read_to_string(dir.path().join("captions.jsonl")).unwrap();
        let kept: Vec<&str> = text.lines().filter(|l| l.contains("text")).collect();
        std::fs::write(dir.path().join("captions.jsonl"), kept.join("\n")).unwrap();
        let raw: Arc<dyn Dataset> = Arc::new(
            ImageText::open(&image_text(dir.path(), Some("error")), Split::Train).unwrap(),
        );
        let log = Arc::new(BadLog::default());
        let ds = Screened::new(
            raw,
            Some(OnBad::Error),
            Some((tokenizer(), 16)),
            log.clone(),
        );
        assert!(ds.get(0, 4, &mut Rng::new(0)).is_ok());
        let e = ds.get(1, 4, &mut Rng::new(0)).unwrap_err();
        assert!(e.to_string().contains("01.png"), "{e}");
        let e = ds.get(6, 4, &mut Rng::new(0)).unwrap_err();
        assert!(
            matches!(e, DataError::Caption { .. }) && e.to_string().contains("07.png"),
            "{e}"
        );
        assert_eq!(log.count(), 0);
    }

    #[test]
    fn generated_captions_that_do_not_fit_are_cut_and_counted() {
        let raw: Arc<dyn Dataset> =
            Arc::new(crate::synthetic::SyntheticShapes::new(20, 1, 4, 0.0, Split::Train).unwrap());
        let caption = raw.text(0).unwrap();
        let tok = Tokenizer::bytes_bpe(&[caption.as_str()], 300);
        let log = Arc::new(BadLog::default());
        let ds = Screened::new(raw, None, Some((tok, 4)), log.clone());
        for i in 0..5 {
            assert!(ds.get(i, 8, &mut Rng::new(0)).is_ok());
        }
        assert_eq!((log.count(), log.truncated()), (0, 5));
        assert!(log
            .summary()
            .unwrap()
            .contains("5 captions longer than the context"));
    }

    fn webdataset(pattern: &str, on_bad: Option<&str>) -> Ctor {
        let mut args = vec![
            ("shards", Arg::Str(pattern.into())),
            ("image", Arg::Str("jpg".into())),
            ("text", Arg::Str("txt".into())),
        ];
        if let Some(o) = on_bad {
            args.push(("on_bad", Arg::Str(o.into())));
        }
        test_ctor("webdataset", &args)
    }

    /// Shard 0: four good samples, one without caption, one whose JPEG is cut. Shard 1:
    /// empty (a tar without members). Shard 2: a file that is not a tar.
    fn bad_shards() -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(std::fs::File::create(dir.path().join("s-0.tar")).unwrap());
        let img = jpeg(8, 8, [200, 10, 10]);
        for k in 0..6 {
            let key = format!("k{k}");
            match k {
                2 => add(&mut b, &format!("{key}.jpg"), &img),
                4 => {
                    add(&mut b, &format!("{key}.jpg"), &img[..img.len() / 3]);
                    add(&mut b, &format!("{key}.txt"), b"a cut photo");
                }
                _ => {
                    add(&mut b, &format!("{key}.jpg"), &img);
                    add(
                        &mut b,
                        &format!("{key}.txt"),
                        format!("photo {k}").as_bytes(),
                    );
                }
            }
        }
        b.finish().unwrap();
        tar::Builder::new(std::fs::File::create(dir.path().join("s-1.tar")).unwrap())
            .finish()
            .unwrap();
        std::fs::write(dir.path().join("s-2.tar"), b"").unwrap();
        let pattern = format!("{}/s-{{0..2}}.tar", dir.path().display());
        (dir, pattern)
    }

    #[test]
    fn webdataset_skip_counts_empty_shards_missing_members_and_cut_images() {
        let (_dir, pattern) = bad_shards();
        let raw: Arc<dyn Dataset> =
            Arc::new(WebDataset::open(&webdataset(&pattern, Some("skip")), Split::Train).unwrap());
        assert_eq!(raw.len(), 5);
        let log = Arc::new(BadLog::default());
        let ds = Screened::new(raw, Some(OnBad::Skip), None, log.clone());
        let names: Vec<String> = log.first().iter().map(|b| b.name.clone()).collect();
        assert_eq!(log.count(), 3, "{names:?}");
        assert!(names[0].ends_with("s-0.tar:k2"), "{names:?}");
        assert!(
            names[1].ends_with("s-1.tar") && names[2].ends_with("s-2.tar"),
            "{names:?}"
        );
        let texts: Vec<String> = (0..ds.len())
            .map(|i| ds.get(i, 4, &mut Rng::new(0)).unwrap().text)
            .collect();
        assert_eq!(
            texts,
            ["photo 0", "photo 1", "photo 3", "photo 5", "photo 5"]
        );
        assert_eq!(log.count(), 4);
        assert!(log.first()[3].name.ends_with("s-0.tar:k4"));
    }

    #[test]
    fn webdataset_error_names_the_shard_and_key() {
        let (dir, pattern) = bad_shards();
        let e = WebDataset::open(&webdataset(&pattern, None), Split::Train)
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("s-0.tar") && e.to_string().contains("k2"),
            "{e}"
        );
        // An empty shard alone.
        let e = WebDataset::open(
            &webdataset(&dir.path().join("s-1.tar").display().to_string(), None),
            Split::Train,
        )
        .err()
        .unwrap();
        assert!(
            e.to_string().contains("s-1.tar") && e.to_string().contains("no samples"),
            "{e}"
        );
    }
}
