//! Model configurations read from the plan's constructor arguments (the catalogue's
//! names: `vit(..)` and `clip_text(..)`), validated once so the modules can trust them.

use pexc_compiler::lower::plan::{Arg, Ctor};

/// How a vision tower turns its tokens into one embedding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    /// A learned probe query attends over all tokens, then `x + MLP(LN(x))`.
    Attention { heads: usize },
    /// The class token's output.
    Cls,
    /// The mean of the output tokens.
    Mean,
    /// No pooling: the tower outputs tokens.
    None,
}

/// The PE vision transformer (`vit(..)` in the catalogue).
#[derive(Clone, Debug, PartialEq)]
pub struct VitConfig {
    pub patch: usize,
    pub width: usize,
    pub depth: usize,
    pub heads: usize,
    pub mlp: usize,
    pub rope2d: bool,
    pub abs: bool,
    pub cls: bool,
    pub pool: Pool,
    pub out: Option<usize>,
    /// The pretraining resolution: the absolute position table is (image / patch)^2.
    pub image: usize,
    pub ln_post: bool,
    pub layer_scale: Option<f64>,
    pub drop_path: f64,
}

/// The CLIP text transformer (`clip_text(..)`).
#[derive(Clone, Debug, PartialEq)]
pub struct TextConfig {
    pub context: usize,
    pub width: usize,
    pub depth: usize,
    pub heads: usize,
    pub mlp: usize,
    pub vocab: usize,
    pub out: usize,
}

fn positive(c: &Ctor, name: &str) -> Result<usize, String> {
    match c.int(name) {
        Some(v) if v > 0 => Ok(v as usize),
        Some(v) => Err(format!(
            "`{}`: `{name}` must be positive, found {v}",
            c.ctor
        )),
        None => Err(format!("`{}`: `{name}` is missing from the plan", c.ctor)),
    }
}

fn heads_divide(ctor: &str, width: usize, heads: usize) -> Result<usize, String> {
    if !width.is_multiple_of(heads) {
        return Err(format!(
            "`{ctor}`: width {width} is not divisible by {heads} heads"
        ));
    }
    Ok(width / heads)
}

impl VitConfig {
    pub fn from_plan(c: &Ctor) -> Result<Self, String> {
        if c.ctor != "vit" {
            return Err(format!("`{}` is not a vision transformer", c.ctor));
        }
        let width = positive(c, "width")?;
        let heads = positive(c, "heads")?;
        let head_dim = heads_divide("vit", width, heads)?;
        let names: Vec<&str> = c
            .list("pos")
            .unwrap_or(&[])
            .iter()
            .filter_map(|a| match a {
                Arg::Call(p) => Some(p.ctor.as_str()),
                Arg::Str(s) => Some(s.as_str()),
                _ => None,
            })
            .collect();
        let rope2d = names.contains(&"rope2d");
        if rope2d && head_dim % 4 != 0 {
            return Err(format!(
                "`vit`: 2D RoPE needs a head width divisible by 4 (x and y halves of rotated pairs), found {head_dim}"
            ));
        }
        let pool = match c.arg("pool") {
            Some(Arg::Call(p)) => match p.ctor.as_str() {
                "attention" => {
                    let heads = p.int("heads").unwrap_or(8).max(1) as usize;
                    heads_divide("attention", width, heads)?;
                    Pool::Attention { heads }
                }
                "cls" => Pool::Cls,
                "mean" => Pool::Mean,
                "none" => Pool::None,
                other => return Err(format!("`vit`: unknown pooling `{other}`")),
            },
            Some(Arg::Str(s)) if s == "cls" => Pool::Cls,
            Some(Arg::Str(s)) if s == "mean" => Pool::Mean,
            _ => Pool::None,
        };
        let cls = c.bool("cls").unwrap_or(true);
        if pool == Pool::Cls && !cls {
            return Err("`vit`: `pool: cls` needs `cls: true`".into());
        }
        let patch = positive(c, "patch")?;
        Ok(VitConfig {
            patch,
            width,
            depth: positive(c, "depth")?,
            heads,
            mlp: c.int("mlp").map_or(4 * width, |m| m.max(1) as usize),
            rope2d,
            abs: names.contains(&"abs"),
            cls,
            pool,
            out: c.int("out").filter(|&o| o > 0).map(|o| o as usize),
            image: c.int("image").map_or(224, |i| i.max(patch as i64) as usize),
            ln_post: c.bool("ln_post").unwrap_or(true),
            layer_scale: c.float("layer_scale"),
            drop_path: c.float("drop_path").unwrap_or(0.0),
        })
    }

    pub fn head_dim(&self) -> usize {
        self.width / self.heads
    }

    /// Patches per side of the absolute position table.
    pub fn pos_grid(&self) -> usize {
        (self.image / self.patch).max(1)
    }

    /// The embedding width: the projection's, or the token width without one.
    pub fn embed_dim(&self) -> usize {
        self.out.unwrap_or(self.width)
    }
}

impl TextConfig {
    pub fn from_plan(c: &Ctor) -> Result<Self, String> {
        if c.ctor != "clip_text" {
            return Err(format!("`{}` is not a CLIP text transformer", c.ctor));
        }
        let width = positive(c, "width")?;
        let heads = positive(c, "heads")?;
        heads_divide("clip_text", width, heads)?;
        let vocab = positive(c, "vocab")?;
        if vocab < 3 {
            return Err(format!(
                "`clip_text`: a vocabulary of {vocab} has no room for start, end and padding ids"
            ));
        }
        Ok(TextConfig {
            context: positive(c, "context")?,
            width,
            depth: positive(c, "depth")?,
            heads,
            mlp: c.int("mlp").map_or(4 * width, |m| m.max(1) as usize),
            vocab,
            out: positive(c, "out")?,
        })
    }
}
