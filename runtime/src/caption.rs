//! The video data engine in miniature (pe-reference.md "Stage 2"): a trained captioner
//! (the vision tower, projector and decoder of a language-alignment stage) describes
//! frames of every clip of the stage's data, and its frame-level descriptions are
//! summarised into one caption per clip, written as a `video_text` dataset (folders of
//! PNG frames and `captions.jsonl`) that a later stage reads as `stage.captions`.
//!
//! PE summarises frame captions and metadata with a large LLM. Here the summary is a
//! fixed rule over the captioner's answers to four questions (shape, colour, position,
//! size) on the first, middle and last frame: a change of colour, of position or of size
//! between the first and the last frame becomes the motion the caption names. The clips'
//! own captions are never read: only what the captioner says reaches the dataset.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use pexc_compiler::lower::plan::{Arg, Ctor, DataPlan, ModelInit, Plan, StagePlan};
use serde_json::{json, Value};

use crate::checkpoint::{self, Stored};
use crate::data::{self, synthetic::QUESTIONS, Split};
use crate::rundir::RunDir;
use crate::train::clip::{self, ClipModel, Towers};

/// The captions file of a written dataset.
pub const CAPTIONS: &str = "captions.jsonl";

/// Where stage `stage` writes its dataset `dataset`.
pub fn dataset_dir(dir: &RunDir, stage: &str, dataset: &str) -> PathBuf {
    dir.path(&format!("data/{stage}/{dataset}"))
}

/// The `video_text` source over a written dataset.
pub fn video_text(root: &Path) -> Ctor {
    Ctor {
        ctor: "video_text".into(),
        args: [
            (
                "root".to_string(),
                Arg::Str(root.to_string_lossy().into_owned()),
            ),
            ("captions".to_string(), Arg::Str(CAPTIONS.to_string())),
        ]
        .into_iter()
        .collect(),
    }
}

/// A captioner's answers about one frame, in `QUESTIONS` order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Answers {
    pub shape: String,
    pub colour: String,
    pub position: String,
    pub size: String,
}

/// (row, column) of a position answer on the 3 x 3 grid of `synthetic::POSITIONS`.
fn cell(position: &str) -> (i32, i32) {
    let row = if position.contains("top") {
        0
    } else if position.contains("bottom") {
        2
    } else {
        1
    };
    let col = if position.contains("left") {
        0
    } else if position.contains("right") {
        2
    } else {
        1
    };
    (row, col)
}

/// The clip caption from frame answers (the stand-in for PE's LLM summary): colour
/// change, else movement across the position grid, else size change, else a still.
pub fn summarise(first: &Answers, middle: &Answers, last: &Answers) -> String {
    let shape = [&middle.shape, &first.shape, &last.shape]
        .into_iter()
        .find(|s| !s.is_empty())
        .map_or("shape", |s| s.as_str());
    let colour = if first.colour.is_empty() {
        String::new()
    } else {
        format!("{} ", first.colour)
    };
    // A change counts when the middle frame agrees with it (is the first's or the last's
    // value, or between them): one misread frame is not a motion.
    let colour_changes = !first.colour.is_empty()
        && !last.colour.is_empty()
        && first.colour != last.colour
        && (middle.colour == first.colour || middle.colour == last.colour);
    if colour_changes {
        return format!("a {shape} turning from {} to {}", first.colour, last.colour);
    }
    let (r0, c0) = cell(&first.position);
    let (rm, cm) = cell(&middle.position);
    let (r1, c1) = cell(&last.position);
    let between = |a: i32, m: i32, b: i32| a.min(b) <= m && m <= a.max(b);
    let (dy, dx) = if between(r0, rm, r1) && between(c0, cm, c1) {
        (r1 - r0, c1 - c0)
    } else {
        (0, 0)
    };
    if dx != 0 && dx.abs() >= dy.abs() {
        let dir = if dx > 0 { "right" } else { "left" };
        return format!("a {colour}{shape} moving {dir}");
    }
    if dy != 0 {
        let dir = if dy > 0 { "down" } else { "up" };
        return format!("a {colour}{shape} moving {dir}");
    }
    match (first.size.as_str(), last.size.as_str()) {
        _ if middle.size != first.size && middle.size != last.size => format!("a {colour}{shape}"),
        ("small", "large") => format!("a {colour}{shape} growing"),
        ("large", "small") => format!("a {colour}{shape} shrinking"),
        _ => format!("a {colour}{shape}"),
    }
}

/// Greedy answers of the captioner to `question` for every row of `prefix`
/// (projected image tokens), at most `max_tokens` ids each.
fn answer<B: Backend>(
    model: &ClipModel<B>,
    tok: &data::Tokenizer,
    prefix: Tensor<B, 3>,
    question: &str,
    context: usize,
    max_tokens: usize,
) -> Result<Vec<String>, String> {
    let decoder = model
        .decoder
        .as_ref()
        .ok_or("the captioner has no decoder")?;
    let [n, _, _] = prefix.dims();
    let device = prefix.device();
    let (row, eot) = tok.encode(question, context + 1);
    let prompt: Vec<i64> = row[..eot].to_vec();
    let end = row[eot];
    let mut rows: Vec<Vec<i64>> = vec![prompt.clone(); n];
    let mut done = vec![false; n];
    let mut out: Vec<Vec<i64>> = vec![Vec::new(); n];
    for _ in 0..max_tokens {
        let len = rows[0].len();
        if len >= context {
            break;
        }
        let flat: Vec<i64> = rows.iter().flatten().copied().collect();
        let ids: Tensor<B, 2, Int> = Tensor::from_data(TensorData::new(flat, [n, len]), &device);
        let logits = decoder.forward(prefix.clone(), ids); // (n, len, vocab)
        let [_, _, v] = logits.dims();
        let next = logits
            .slice([0..n, len - 1..len, 0..v])
            .reshape([n, v])
            .argmax(1)
            .into_data()
            .convert::<i64>()
            .to_vec::<i64>()
            .map_err(|e| format!("{e:?}"))?;
        for (i, &id) in next.iter().enumerate() {
            if !done[i] {
                if id == end {
                    done[i] = true;
                } else {
                    out[i].push(id);
                }
            }
            rows[i].push(id);
        }
        if done.iter().all(|&d| d) {
            break;
        }
    }
    Ok(out
        .iter()
        .map(|ids| tok.decode(ids).trim().to_string())
        .collect())
}

/// The language stage a captioner's models come from.
fn captioner_stage<'p>(stage: &StagePlan, plan: &'p Plan) -> Result<&'p StagePlan, String> {
    stage
        .models
        .iter()
        .find_map(|m| match &m.init {
            ModelInit::Stage { stage: s, .. } => plan.stage(s),
            _ => None,
        })
        .ok_or_else(|| {
            format!(
                "stage `{}`: the captioner's models do not come from an earlier stage",
                stage.name
            )
        })
}

/// Runs a caption stage: captions every training clip of its data and writes the dataset.
/// Returns what it wrote, for the stage record and the report.
pub fn run_caption_stage<B: Backend>(
    stage: &StagePlan,
    plan: &Plan,
    dir: &RunDir,
    init: &HashMap<String, HashMap<String, Stored>>,
    progress: bool,
    limit: Option<usize>,
    device: &B::Device,
) -> Result<Value, String> {
    let fail = |e: String| format!("stage `{}`: {e}", stage.name);
    let mut towers: Towers = clip::towers(stage)?;
    // The language stage may have added LayerScale to the tower it trained.
    if let Some(v) = init.get("vision") {
        if checkpoint::has_layer_scale(v) && towers.vision_config.layer_scale.is_none() {
            towers.vision_config.layer_scale = Some(1.0);
        }
    }
    let dec = towers
        .decoder_config
        .clone()
        .ok_or_else(|| fail("a captioner needs a decoder".into()))?;
    let mut model: ClipModel<B> = ClipModel::new(&towers, stage, device);
    let get = |part: &str| {
        init.get(part)
            .ok_or_else(|| fail(format!("no trained weights for the captioner's {part}")))
    };
    model.vision =
        checkpoint::assign_allowing(model.vision, get("vision")?, "", |k| k.contains(".ls_"))
            .map_err(fail)?;
    if let Some(p) = model.proj.take() {
        model.proj = Some(checkpoint::assign(p, get("proj")?, "").map_err(fail)?);
    }
    if let Some(d) = model.decoder.take() {
        model.decoder = Some(checkpoint::assign(d, get("decoder")?, "").map_err(fail)?);
    }
    // The captioner speaks its language stage's tokenizer.
    let lang = captioner_stage(stage, plan)?;
    let tok = match lang.phases.first().and_then(|p| p.data.as_ref()) {
        Some(DataPlan::Source(c)) => crate::train::lang_tokenizer(c, dec.vocab).map_err(fail)?,
        _ => return Err(fail(format!("stage `{}` has no data", lang.name))),
    };
    let max_tokens = stage
        .caption
        .as_ref()
        .and_then(|c| c.int("max_tokens"))
        .unwrap_or(32)
        .max(1) as usize;
    let phase = stage
        .phases
        .first()
        .ok_or_else(|| fail("no phase".into()))?;
    let ctor = match &phase.data {
        Some(DataPlan::Source(c)) => c.clone(),
        _ => return Err(fail("a caption stage captions a data source".into())),
    };
    let clips = data::open_video(&ctor, Split::Train).map_err(|e| fail(e.to_string()))?;
    let frames = ctor.int("frames").unwrap_or(8).max(1) as usize;
    let res = phase.resolution as usize;
    let batch = phase.batch.max(1) as usize;

    let root = dataset_dir(dir, &stage.name, "captions");
    let parent = root.parent().map(Path::to_path_buf).unwrap_or_default();
    let partial = parent.join(format!("captions.partial-{}", std::process::id()));
    // What an interrupted engine left.
    if let Ok(entries) = std::fs::read_dir(&parent) {
        for e in entries.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with("captions.partial-")
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    std::fs::create_dir_all(&partial).map_err(|e| fail(format!("{}: {e}", partial.display())))?;

    let picks = {
        let mut p = vec![0, frames / 2, frames - 1];
        p.dedup();
        p
    };
    let mut lines = String::new();
    let mut examples = Vec::new();
    // How the captions compare with the clips' own motion classes, where the data has
    // them: measured for the report only (the dataset never sees the classes).
    let mut agree = Agreement::default();
    // `--smoke` captions a few clips only.
    let n = limit.map_or(clips.len(), |l| l.min(clips.len()));
    let mut rng = data::Rng::new(stage.seed);
    for start in (0..n).step_by(batch) {
        let end = (start + batch).min(n);
        let mut got = Vec::with_capacity(end - start);
        for i in start..end {
            got.push(
                clips
                    .get_clip(i, res, frames, &mut rng)
                    .map_err(|e| fail(e.to_string()))?,
            );
        }
        // Answers per picked frame, per clip.
        let mut answers: Vec<Vec<Answers>> = vec![Vec::new(); got.len()];
        for &f in &picks {
            let samples: Vec<data::Sample> = got.iter().map(|c| c.frames[f].clone()).collect();
            let x = crate::train::images::<B>(&samples, 1, device);
            let out = model
                .vision
                .forward_taps(x, None, &[model.vision.depth() - 1]);
            let tokens = out.taps.into_iter().next().unwrap_or(out.tokens);
            let prefix = match &model.proj {
                Some(p) => p.forward(tokens),
                None => tokens,
            };
            let mut per_q = Vec::new();
            for q in QUESTIONS {
                per_q.push(answer(
                    &model,
                    &tok,
                    prefix.clone(),
                    q,
                    dec.context,
                    max_tokens,
                )?);
            }
            for (k, a) in answers.iter_mut().enumerate() {
                a.push(Answers {
                    shape: per_q[0][k].clone(),
                    colour: per_q[1][k].clone(),
                    position: per_q[2][k].clone(),
                    size: per_q[3][k].clone(),
                });
            }
        }
        for (k, clip) in got.iter().enumerate() {
            let i = start + k;
            let a = &answers[k];
            let caption = summarise(&a[0], &a[a.len() / 2], &a[a.len() - 1]);
            let folder = format!("clip-{i:05}");
            let fdir = partial.join(&folder);
            std::fs::create_dir_all(&fdir).map_err(|e| fail(format!("{}: {e}", fdir.display())))?;
            for (j, fr) in clip.frames.iter().enumerate() {
                let png = data::image::RgbImage::encode_png(&fr.image, fr.width, fr.height)
                    .map_err(|e| fail(e.to_string()))?;
                let p = fdir.join(format!("frame-{j:03}.png"));
                std::fs::write(&p, png).map_err(|e| fail(format!("{}: {e}", p.display())))?;
            }
            let frame_answers: Vec<Value> = a
                .iter()
                .zip(&picks)
                .map(|(x, f)| {
                    json!({"frame": f, "shape": x.shape, "colour": x.colour,
                           "position": x.position, "size": x.size})
                })
                .collect();
            if let Some(label) = clip.label {
                agree.add(label, named_motion(&caption));
            }
            let line = json!({"video": folder, "text": caption, "answers": frame_answers});
            if examples.len() < 8 {
                examples.push(json!({"clip": i, "caption": caption, "source_caption": clip.text}));
            }
            lines.push_str(&line.to_string());
            lines.push('\n');
        }
        if progress {
            eprint!("\r{} captioning [{end}/{n}]   ", stage.name);
        }
    }
    if progress {
        eprintln!();
    }
    crate::rundir::write_atomic(&partial.join(CAPTIONS), lines.as_bytes())
        .map_err(|e| fail(format!("{CAPTIONS}: {e}")))?;
    // The dataset appears whole or not at all.
    let _ = std::fs::remove_dir_all(&root);
    std::fs::rename(&partial, &root).map_err(|e| fail(format!("{}: {e}", root.display())))?;
    Ok(json!({
        "clips": n,
        "frames": frames,
        "dataset": root.strip_prefix(&dir.root).unwrap_or(&root).to_string_lossy(),
        "examples": examples,
        "motion_agreement": agree.to_json(),
    }))
}

/// The motion class (index into `data::video::MOTIONS`) a summary caption names, if any.
pub fn named_motion(caption: &str) -> Option<usize> {
    if caption.contains(" turning from ") || caption.contains(" changing from ") {
        return Some(6);
    }
    let phrases: [&[&str]; 6] = [
        &["moving left"],
        &["moving right"],
        &["moving up"],
        &["moving down"],
        &["growing", "getting bigger"],
        &["shrinking", "getting smaller"],
    ];
    phrases
        .iter()
        .position(|ps| ps.iter().any(|p| caption.contains(p)))
}

/// The engine's captions against the clips' classes: the share that name the right
/// motion, that name one on the right axis (left/right, up/down, size, colour: what an
/// order-free pooling of frames can tell apart), and that name none.
#[derive(Default)]
struct Agreement {
    clips: usize,
    right: usize,
    axis: usize,
    none: usize,
}

impl Agreement {
    fn add(&mut self, label: usize, named: Option<usize>) {
        let axis = |m: usize| m.min(6) / 2;
        self.clips += 1;
        match named {
            Some(m) if m == label => {
                self.right += 1;
                self.axis += 1;
            }
            Some(m) if axis(m) == axis(label) => self.axis += 1,
            Some(_) => {}
            None => self.none += 1,
        }
    }

    fn to_json(&self) -> Value {
        if self.clips == 0 {
            return Value::Null;
        }
        let share = |k: usize| k as f64 / self.clips as f64;
        json!({"clips": self.clips, "motion": share(self.right), "axis": share(self.axis),
               "no_motion": share(self.none)})
    }
}

/// Question answering of a language stage on held-out generated images (`held`, the
/// first samples of `ctor`'s held-out split): the share of exact answers per question,
/// and a few free captions.
pub fn qa_accuracy<B: Backend>(
    model: &ClipModel<B>,
    tok: &data::Tokenizer,
    ctor: &Ctor,
    held: &[data::Sample],
    context: usize,
    device: &B::Device,
) -> Result<Value, String> {
    let ds = data::open(ctor, Split::HeldOut).map_err(|e| e.to_string())?;
    let mut right = [0usize; QUESTIONS.len()];
    let mut captions = Vec::new();
    for (c, chunk) in held.chunks(64).enumerate() {
        let x = crate::train::images::<B>(chunk, 1, device);
        let out = model
            .vision
            .forward_taps(x, None, &[model.vision.depth() - 1]);
        let tokens = out.taps.into_iter().next().unwrap_or(out.tokens);
        let prefix = match &model.proj {
            Some(p) => p.forward(tokens),
            None => tokens,
        };
        for (q, question) in QUESTIONS.iter().enumerate() {
            let got = answer(model, tok, prefix.clone(), question, context, 8)?;
            for (k, g) in got.iter().enumerate() {
                let truth = ds
                    .questions(c * 64 + k)
                    .map_err(|e| e.to_string())?
                    .get(q)
                    .map(|(_, a)| a.clone())
                    .unwrap_or_default();
                if *g == truth {
                    right[q] += 1;
                }
            }
        }
        if c == 0 {
            let free = answer(model, tok, prefix, "", context, 12)?;
            for (k, f) in free.iter().take(4).enumerate() {
                captions.push(json!({"caption": f, "truth": chunk[k].text}));
            }
        }
    }
    let n = held.len().max(1) as f64;
    let mut per = serde_json::Map::new();
    for (q, question) in QUESTIONS.iter().enumerate() {
        per.insert(question.to_string(), json!(right[q] as f64 / n));
    }
    Ok(json!({
        "held_out": held.len(),
        "accuracy": per,
        "mean_accuracy": right.iter().sum::<usize>() as f64 / (n * QUESTIONS.len() as f64),
        "captions": captions,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(shape: &str, colour: &str, position: &str, size: &str) -> Answers {
        Answers {
            shape: shape.into(),
            colour: colour.into(),
            position: position.into(),
            size: size.into(),
        }
    }

    #[test]
    fn captions_are_scored_against_the_motion_classes() {
        use crate::data::video::MOTIONS;
        // Every class's own name, and the summary's phrasings, read back as that class.
        for (m, name) in MOTIONS.iter().enumerate().take(6) {
            assert_eq!(named_motion(&format!("a red circle {name}")), Some(m));
        }
        assert_eq!(named_motion("a circle turning from red to blue"), Some(6));
        assert_eq!(named_motion("a star getting smaller"), Some(5));
        assert_eq!(named_motion("a red circle"), None);
        let mut g = Agreement::default();
        g.add(0, Some(0)); // right
        g.add(0, Some(1)); // right axis, wrong direction
        g.add(4, Some(2)); // wrong axis
        g.add(6, None); // no motion named
        let v = g.to_json();
        assert_eq!(v["clips"], 4);
        assert_eq!(v["motion"], 0.25);
        assert_eq!(v["axis"], 0.5);
        assert_eq!(v["no_motion"], 0.25);
        assert!(Agreement::default().to_json().is_null());
    }

    #[test]
    fn the_summary_names_the_change_between_first_and_last_frame() {
        let mid = a("circle", "red", "center", "small");
        let s = |f: Answers, l: Answers| summarise(&f, &mid, &l);
        assert_eq!(
            s(
                a("circle", "red", "left", "small"),
                a("circle", "red", "right", "small")
            ),
            "a red circle moving right"
        );
        assert_eq!(
            s(
                a("", "red", "top", "small"),
                a("", "red", "bottom left", "small")
            ),
            "a red circle moving down"
        );
        assert_eq!(
            s(
                a("", "red", "top left", "small"),
                a("", "red", "top left", "large")
            ),
            "a red circle growing"
        );
        assert_eq!(
            s(a("", "red", "top", "small"), a("", "blue", "top", "small")),
            "a circle turning from red to blue"
        );
        assert_eq!(
            s(a("", "red", "top", "large"), a("", "red", "top", "large")),
            "a red circle"
        );
        // The middle frame must agree: a colour, a cell or a size it contradicts is noise.
        let odd = a("circle", "red", "bottom right", "large");
        assert_eq!(
            summarise(
                &a("", "red", "top", "small"),
                &odd,
                &a("", "blue", "top", "small")
            ),
            "a circle turning from red to blue"
        );
        let odd = a("circle", "purple", "bottom right", "small");
        assert_eq!(
            summarise(
                &a("", "red", "left", "small"),
                &odd,
                &a("", "blue", "right", "small")
            ),
            "a red circle"
        );
    }
}
