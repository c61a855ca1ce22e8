//! `report.md` and its plots (SVG, written by hand: no plotting dependency).

use std::fmt::Write as _;

use pexc_compiler::lower::plan::Plan;
use serde_json::Value;

/// A line plot of `series` (name, points) as SVG.
pub fn svg_plot(title: &str, y_label: &str, series: &[(String, Vec<(f64, f64)>)]) -> String {
    let (w, h, left, right, top, bottom) = (640.0, 320.0, 60.0, 20.0, 30.0, 40.0);
    let pts: Vec<&(f64, f64)> = series.iter().flat_map(|(_, p)| p).collect();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in pts
        .iter()
        .map(|p| (p.0, p.1))
        .filter(|(_, y)| y.is_finite())
    {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if (x1 - x0).abs() < 1e-12 {
        x1 = x0 + 1.0;
    }
    if (y1 - y0).abs() < 1e-12 {
        y1 = y0 + 1.0;
    }
    let sx = |x: f64| left + (x - x0) / (x1 - x0) * (w - left - right);
    let sy = |y: f64| h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom);
    let colors = [
        "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
    ];
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="18" text-anchor="middle" font-size="13">{}</text>
<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="black"/>
<line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="black"/>
<text x="{left}" y="{}" text-anchor="middle">{}</text>
<text x="{}" y="{}" text-anchor="middle">{}</text>
<text x="{}" y="{}" text-anchor="end">{}</text>
<text x="{}" y="{}" text-anchor="end">{}</text>
<text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle">{}</text>
"##,
        w / 2.0,
        escape(title),
        h - bottom,
        w - right,
        h - bottom,
        h - bottom,
        h - bottom + 14.0,
        short(x0),
        w - right,
        h - bottom + 14.0,
        short(x1),
        left - 4.0,
        h - bottom,
        short(y0),
        left - 4.0,
        top + 4.0,
        short(y1),
        h / 2.0,
        h / 2.0,
        escape(y_label),
    );
    for (i, (name, points)) in series.iter().enumerate() {
        let color = colors[i % colors.len()];
        let path: Vec<String> = points
            .iter()
            .filter(|(_, y)| y.is_finite())
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
            path.join(" ")
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" fill="{color}">{}</text>"#,
            w - right - 120.0,
            top + 14.0 * (i as f64 + 1.0),
            escape(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn short(x: f64) -> String {
    if x.abs() >= 1e4 || (x != 0.0 && x.abs() < 1e-2) {
        format!("{x:.2e}")
    } else {
        format!("{x:.3}")
    }
}

/// The report of a run: per stage, its phases, final losses, evaluation and plots (the
/// plots are written beside it by the caller; this links them).
pub fn markdown(
    plan: &Plan,
    metrics: &[Value],
    eval: &Value,
    backend: &str,
    wall_s: f64,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Run report: {}\n", plan.source);
    let _ = writeln!(s, "Backend: {backend}. Wall time: {wall_s:.1} s.\n");
    for st in &plan.stages {
        let _ = writeln!(s, "## Stage `{}`\n", st.name);
        let _ = writeln!(
            s,
            "| phase | resolution | batch | steps | final loss | samples/s |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|");
        for p in &st.phases {
            let rows: Vec<&Value> = metrics
                .iter()
                .filter(|m| m["stage"] == st.name.as_str() && m["phase"] == p.name.as_str())
                .collect();
            let last = rows.iter().rev().find_map(|m| m["loss"].as_f64());
            let speed: Vec<f64> = rows
                .iter()
                .filter_map(|m| m["samples_per_s"].as_f64())
                .collect();
            let median = if speed.is_empty() {
                None
            } else {
                let mut v = speed.clone();
                v.sort_by(|a, b| a.total_cmp(b));
                Some(v[v.len() / 2])
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                p.name,
                p.resolution,
                p.batch,
                rows.len(),
                last.map_or("-".into(), |x| format!("{x:.4}")),
                median.map_or("-".into(), |x| format!("{x:.0}"))
            );
        }
        let _ = writeln!(s);
        if let Some(e) = eval.get(&st.name) {
            if let Some(z) = e["zero_shot_top1"].as_f64() {
                let chance = e["chance"].as_f64().unwrap_or(0.0);
                let _ = writeln!(
                    s,
                    "Zero-shot classification on {} held-out images: **{:.1}%** (chance {:.1}%, {:.1}x).",
                    e["held_out"],
                    100.0 * z,
                    100.0 * chance,
                    z / chance.max(1e-9)
                );
            }
            if let (Some(a), Some(b)) = (
                e["image_to_text_r1"].as_f64(),
                e["text_to_image_r1"].as_f64(),
            ) {
                let _ = writeln!(
                    s,
                    "Retrieval recall@1: image->text {:.1}%, text->image {:.1}%.",
                    100.0 * a,
                    100.0 * b
                );
            }
            if let Some(note) = e["note"].as_str() {
                let _ = writeln!(s, "Note: {note}.");
            }
            let v = &e["video"];
            if let Some(z) = v["zero_shot_top1"].as_f64() {
                let chance = v["chance"].as_f64().unwrap_or(0.0);
                let _ = write!(
                    s,
                    "Video zero-shot over {} motion classes on {} held-out clips ({} frames average-pooled): **{:.1}%** (chance {:.1}%)",
                    v["classes"].as_array().map_or(0, Vec::len),
                    v["clips"],
                    v["frames"],
                    100.0 * z,
                    100.0 * chance
                );
                if let Some(init) = &st.init {
                    if let Some(b) = v[format!("{init}_zero_shot_top1")].as_f64() {
                        let _ = write!(
                            s,
                            "; the image-only `{init}` model on the same clips: {:.1}%",
                            100.0 * b
                        );
                    }
                    let t = &v[format!("against_{init}")];
                    if let Some(p) = t["p_value"].as_f64() {
                        let _ = write!(
                            s,
                            " (right only here on {} clips, only by `{init}` on {}: McNemar's exact p = {:.2e})",
                            t["only_this"], t["only_base"], p
                        );
                    }
                }
                let _ = writeln!(s, ".");
                // Per class: what each model gets right (the pairs that differ only in
                // time's direction look alike to an order-free average of frames).
                let init_per = st
                    .init
                    .as_ref()
                    .map(|i| v[format!("{i}_per_class")].clone())
                    .unwrap_or(Value::Null);
                if let Some(rows) = v["per_class"].as_array() {
                    let base = init_per.as_array();
                    let _ = writeln!(
                        s,
                        "\n| motion | clips | right | right, image-only |\n|---|---|---|---|"
                    );
                    for (k, r) in rows.iter().enumerate() {
                        let b = base
                            .and_then(|b| b.get(k))
                            .map_or("-".to_string(), |b| b["right"].to_string());
                        let _ = writeln!(
                            s,
                            "| {} | {} | {} | {b} |",
                            r["class"].as_str().unwrap_or(""),
                            r["clips"],
                            r["right"]
                        );
                    }
                    let _ = writeln!(s);
                }
                // By kind: what an average of frames can tell (a clip and its reverse
                // average alike).
                let k = &v["kinds"];
                if let Some(top1) = k["top1"].as_f64() {
                    let _ = write!(
                        s,
                        "By kind of motion ({}; a prediction is right when it names a motion \
                         of the clip's kind): **{:.1}%** (chance {:.1}%)",
                        k["names"]
                            .as_array()
                            .map(|n| n
                                .iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join(", "))
                            .unwrap_or_default(),
                        100.0 * top1,
                        100.0 * k["chance"].as_f64().unwrap_or(0.0)
                    );
                    if let Some(init) = &st.init {
                        if let Some(b) = v[format!("{init}_kinds")]["top1"].as_f64() {
                            let _ = write!(s, "; the image-only `{init}` model: {:.1}%", 100.0 * b);
                        }
                    }
                    let _ = writeln!(s, ".\n");
                }
            }
            let q = &e["questions"];
            if let Some(m) = q["mean_accuracy"].as_f64() {
                let per: Vec<String> = q["accuracy"]
                    .as_object()
                    .map(|o| {
                        o.iter()
                            .map(|(k, v)| format!("{k} {:.0}%", 100.0 * v.as_f64().unwrap_or(0.0)))
                            .collect()
                    })
                    .unwrap_or_default();
                let _ = writeln!(
                    s,
                    "Question answering on {} held-out images: {:.1}% exact ({}).",
                    q["held_out"],
                    100.0 * m,
                    per.join(", ")
                );
                for c in q["captions"].as_array().into_iter().flatten() {
                    let _ = writeln!(
                        s,
                        "- caption \"{}\" (data: \"{}\")",
                        c["caption"].as_str().unwrap_or(""),
                        c["truth"].as_str().unwrap_or("")
                    );
                }
            }
            let c = &e["captions"];
            if let Some(n) = c["clips"].as_u64() {
                let _ = writeln!(s, "Captioned {n} clips into `{}`; examples (caption written, the generator's own caption never read):\n", c["dataset"].as_str().unwrap_or(""));
                for x in c["examples"].as_array().into_iter().flatten() {
                    let _ = writeln!(
                        s,
                        "- \"{}\" (generated clip: \"{}\")",
                        x["caption"].as_str().unwrap_or(""),
                        x["source_caption"].as_str().unwrap_or("")
                    );
                }
                let g = &c["motion_agreement"];
                if let (Some(m), Some(a), Some(z)) = (
                    g["motion"].as_f64(),
                    g["axis"].as_f64(),
                    g["no_motion"].as_f64(),
                ) {
                    let _ = writeln!(
                        s,
                        "\nAgainst the clips' motion classes (measured, never used): {:.1}% of captions name the right motion, {:.1}% one on the right axis, {:.1}% none.",
                        100.0 * m,
                        100.0 * a,
                        100.0 * z
                    );
                }
            }
            let l = &e["layers"];
            if let (Some(cls), Some(dense)) = (
                l["classification_top1"].as_array(),
                l["dense_miou"].as_array(),
            ) {
                let _ = writeln!(
                    s,
                    "\nLayer-wise probes (frozen features of every block; 1-based blocks):\n"
                );
                let _ = writeln!(s, "| block | classification top-1 | dense mIoU | object mIoU |\n|---|---|---|---|");
                let objects = l["object_miou"].as_array().cloned().unwrap_or_default();
                for (k, (a, b)) in cls.iter().zip(dense).enumerate() {
                    let o = objects.get(k).and_then(Value::as_f64).unwrap_or(0.0);
                    let _ = writeln!(
                        s,
                        "| {} | {:.1}% | {:.3} | {o:.3} |",
                        k + 1,
                        100.0 * a.as_f64().unwrap_or(0.0),
                        b.as_f64().unwrap_or(0.0)
                    );
                }
                let _ = writeln!(s, "\n![layers](plots/{}_layers.svg)", st.name);
            }
            let _ = writeln!(s);
        }
        if metrics.iter().any(|m| m["stage"] == st.name.as_str()) {
            let _ = writeln!(
                s,
                "![loss](plots/{0}_loss.svg)\n![learning rate](plots/{0}_lr.svg)\n",
                st.name
            );
        }
    }
    s
}

/// Named curves of (step, value) points.
pub type Series = Vec<(String, Vec<(f64, f64)>)>;

/// The loss (total and each term) and learning-rate series of a stage.
pub fn series(metrics: &[Value], stage: &str) -> (Series, Series) {
    let rows: Vec<&Value> = metrics.iter().filter(|m| m["stage"] == stage).collect();
    let mut names: Vec<String> = vec!["loss".into()];
    for r in &rows {
        if let Some(obj) = r.as_object() {
            for k in obj.keys() {
                let known = matches!(
                    k.as_str(),
                    "stage"
                        | "phase"
                        | "step"
                        | "loss"
                        | "lr"
                        | "samples_per_s"
                        | "grad_norm"
                        | "logit_scale"
                        | "skipped"
                );
                if !known && !names.contains(k) {
                    names.push(k.clone());
                }
            }
        }
    }
    let loss = names
        .iter()
        .map(|n| {
            let pts = rows
                .iter()
                .filter_map(|r| Some((r["step"].as_f64()?, r[n.as_str()].as_f64()?)))
                .collect();
            (n.clone(), pts)
        })
        .collect();
    let lr = vec![(
        "lr".to_string(),
        rows.iter()
            .filter_map(|r| Some((r["step"].as_f64()?, r["lr"].as_f64()?)))
            .collect(),
    )];
    (loss, lr)
}
