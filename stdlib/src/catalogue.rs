//! The catalogue: one typed signature for every constructor of the language, and the
//! schema of stage fields. The checker validates against it, the runtime builds from it,
//! `pexc explain` documents from it. Adding a constructor is one entry in `CONSTRUCTORS`.

use crate::types::{Kind, Ty};

/// A default value of an optional argument.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DefaultValue {
    /// The argument must be given.
    Required,
    /// The argument may be omitted; omitted means "none" (no projection, random init...).
    Absent,
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(&'static str),
    /// A bare variant of the parameter's kind: `pool = cls`.
    Variant(&'static str),
    /// A list of bare variants: `pos = [rope2d, abs]`.
    Variants(&'static [&'static str]),
    /// A tuple of numbers: `betas = (0.9, 0.999)`.
    Numbers(&'static [f64]),
    /// An empty list.
    EmptyList,
    /// An integer multiple of another integer argument: `mlp = 4 * width`.
    Times(i64, &'static str),
}

/// A constraint on a value, checked after its type.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Constraint {
    None,
    /// > 0
    Positive,
    /// >= 0
    NonNegative,
    /// In (0, 1]: fractions of a batch, mask ratios.
    Fraction,
    /// In [0, 1): drop probabilities.
    Probability,
    /// >= the given integer.
    AtLeast(i64),
    /// A string, one of these.
    OneOf(&'static [&'static str]),
}

impl Constraint {
    /// Whether `x` satisfies the constraint.
    pub fn admits(self, x: f64) -> bool {
        match self {
            Constraint::None => true,
            Constraint::Positive => x > 0.0,
            Constraint::NonNegative => x >= 0.0,
            Constraint::Fraction => x > 0.0 && x <= 1.0,
            Constraint::Probability => (0.0..1.0).contains(&x),
            Constraint::AtLeast(n) => x >= n as f64,
            Constraint::OneOf(_) => false,
        }
    }

    /// Whether the string `s` satisfies the constraint (only `OneOf` constrains strings).
    pub fn admits_str(self, s: &str) -> bool {
        match self {
            Constraint::OneOf(options) => options.contains(&s),
            _ => true,
        }
    }

    /// The constraint in words: "must be positive".
    pub fn described(self) -> String {
        match self {
            Constraint::None => "any value".into(),
            Constraint::Positive => "greater than 0".into(),
            Constraint::NonNegative => "at least 0".into(),
            Constraint::Fraction => "in (0, 1]".into(),
            Constraint::Probability => "in [0, 1)".into(),
            Constraint::AtLeast(n) => format!("at least {n}"),
            Constraint::OneOf(options) => {
                let quoted: Vec<String> = options.iter().map(|o| format!("\"{o}\"")).collect();
                match quoted.split_last() {
                    Some((last, [])) => last.clone(),
                    Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                    None => "nothing".into(),
                }
            }
        }
    }
}

/// One argument of a constructor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Param {
    pub name: &'static str,
    pub ty: Ty,
    pub default: DefaultValue,
    pub constraint: Constraint,
    pub doc: &'static str,
}

/// Properties the checker and runtime need beyond the signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    /// A data source of videos (frame pooling applies).
    Video,
    /// A vision tower.
    Vision,
    /// A text encoder.
    TextEncoder,
    /// A causal decoder for next-token prediction.
    Decoder,
    /// A projector between a vision tower and a decoder.
    Projector,
    /// May be written without parentheses where its kind is expected: `pool: cls`.
    Bare,
}

/// A constructor: `vit(patch: 16, ...)`, `lamb(lr: 2e-3, ...)`, `cls`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Constructor {
    pub name: &'static str,
    pub kind: Kind,
    pub params: &'static [Param],
    pub tags: &'static [Tag],
    /// Model tags a loss needs among the stage's models.
    pub needs: &'static [Tag],
    pub doc: &'static str,
}

impl Constructor {
    pub fn param(&self, name: &str) -> Option<&'static Param> {
        self.params.iter().find(|p| p.name == name)
    }

    pub fn has_tag(&self, tag: Tag) -> bool {
        self.tags.contains(&tag)
    }

    /// The parameter that may be given positionally: the only required one, or the only one.
    pub fn positional(&self) -> Option<&'static Param> {
        let required: Vec<&Param> = self
            .params
            .iter()
            .filter(|p| p.default == DefaultValue::Required)
            .collect();
        match (required.as_slice(), self.params) {
            ([only], _) => Some(only),
            ([], [only]) => Some(only),
            _ => None,
        }
    }

    /// The signature as users write it: `drop_path(p)`.
    pub fn signature(&self) -> String {
        let args: Vec<String> = self
            .params
            .iter()
            .map(|p| match p.default {
                DefaultValue::Required => p.name.to_string(),
                _ => format!("{}?", p.name),
            })
            .collect();
        format!("{}({})", self.name, args.join(", "))
    }
}

const fn p(
    name: &'static str,
    ty: Ty,
    default: DefaultValue,
    constraint: Constraint,
    doc: &'static str,
) -> Param {
    Param {
        name,
        ty,
        default,
        constraint,
        doc,
    }
}

use Constraint as C;
use DefaultValue as D;

const INT: Ty = Ty::Int;
const COUNT: Ty = Ty::Count;
const FLOAT: Ty = Ty::Float;
const FRAC: Ty = Ty::Fraction;
const PAIR_F: Ty = Ty::Tuple(&[Ty::Float, Ty::Float]);
const PAIR_I: Ty = Ty::Tuple(&[Ty::Int, Ty::Int]);

/// What a real data source does with a bad sample.
const ON_BAD: Param = p(
    "on_bad",
    Ty::Str,
    D::Absent,
    C::OneOf(&["error", "skip"]),
    "a bad sample (an image that does not decode or is cut short, a missing caption or member, a shard without samples, a caption longer than the text tower's context): \"error\" (the default) stops with an error naming it; \"skip\" leaves it out, counts it and names the first few at the end",
);

const VIT_PARAMS: &[Param] = &[
    p(
        "patch",
        INT,
        D::Required,
        C::Positive,
        "patch size in pixels (the conv stride)",
    ),
    p("width", INT, D::Required, C::Positive, "token width"),
    p(
        "depth",
        INT,
        D::Required,
        C::Positive,
        "number of transformer blocks",
    ),
    p(
        "heads",
        INT,
        D::Required,
        C::Positive,
        "attention heads per block",
    ),
    p(
        "mlp",
        INT,
        D::Times(4, "width"),
        C::Positive,
        "hidden width of each block's MLP",
    ),
    p(
        "pos",
        Ty::List(&Ty::Of(Kind::PosEmb)),
        D::Variants(&["rope2d", "abs"]),
        C::None,
        "position encodings: 2D RoPE in every attention, a learned absolute table, or both",
    ),
    p(
        "cls",
        Ty::Bool,
        D::Bool(true),
        C::None,
        "prepend a class token",
    ),
    p(
        "pool",
        Ty::Of(Kind::Pool),
        D::Variant("none"),
        C::None,
        "how tokens become one embedding",
    ),
    p(
        "out",
        INT,
        D::Absent,
        C::Positive,
        "projection width (omit for no projection)",
    ),
    p(
        "image",
        INT,
        D::Int(224),
        C::Positive,
        "pretraining resolution; sizes the absolute position table",
    ),
    p(
        "ln_post",
        Ty::Bool,
        D::Bool(true),
        C::None,
        "a LayerNorm after the last block",
    ),
    p(
        "layer_scale",
        FLOAT,
        D::Absent,
        C::Positive,
        "LayerScale initial value (omit for none)",
    ),
    p(
        "drop_path",
        FLOAT,
        D::Float(0.0),
        C::Probability,
        "stochastic depth rate",
    ),
    p(
        "weights",
        Ty::Path,
        D::Absent,
        C::None,
        "a .pt or .safetensors checkpoint in the official PE layout",
    ),
];

const TEXT_PARAMS: &[Param] = &[
    p(
        "context",
        INT,
        D::Required,
        C::Positive,
        "context length in tokens",
    ),
    p("width", INT, D::Required, C::Positive, "token width"),
    p(
        "depth",
        INT,
        D::Required,
        C::Positive,
        "number of transformer blocks",
    ),
    p(
        "heads",
        INT,
        D::Required,
        C::Positive,
        "attention heads per block",
    ),
    p(
        "mlp",
        INT,
        D::Times(4, "width"),
        C::Positive,
        "hidden width of each block's MLP",
    ),
    p(
        "vocab",
        INT,
        D::Int(49408),
        C::Positive,
        "vocabulary size (49408: CLIP BPE)",
    ),
    p(
        "out",
        INT,
        D::Required,
        C::Positive,
        "projection width, equal to the vision tower's",
    ),
    p(
        "weights",
        Ty::Path,
        D::Absent,
        C::None,
        "a .pt or .safetensors checkpoint in the official PE layout",
    ),
];

const OPT_EPS: Param = p(
    "eps",
    FLOAT,
    D::Float(1e-6),
    C::Positive,
    "denominator epsilon",
);

/// Every constructor of the language.
pub static CONSTRUCTORS: &[Constructor] = &[
    // ------------------------------------------------------------------ models
    Constructor {
        name: "vit",
        kind: Kind::Model,
        params: VIT_PARAMS,
        tags: &[Tag::Vision],
        needs: &[],
        doc: "The PE vision transformer: conv patches, RoPE 2D and/or absolute positions, pre-LN blocks, pooling, projection.",
    },
    Constructor {
        name: "clip_text",
        kind: Kind::Model,
        params: TEXT_PARAMS,
        tags: &[Tag::TextEncoder],
        needs: &[],
        doc: "The CLIP text transformer: causal, pooled at the end-of-text token, projection without bias.",
    },
    Constructor {
        name: "text_decoder",
        kind: Kind::Model,
        params: &[
            p("width", INT, D::Required, C::Positive, "token width"),
            p("depth", INT, D::Required, C::Positive, "number of transformer blocks"),
            p("heads", INT, D::Required, C::Positive, "attention heads per block"),
            p("kv_heads", INT, D::Absent, C::Positive, "key-value heads for grouped-query attention (default: `heads`)"),
            p("mlp", INT, D::Times(4, "width"), C::Positive, "hidden width of each block's MLP"),
            p("vocab", INT, D::Int(49408), C::Positive, "vocabulary size"),
            p("context", INT, D::Required, C::Positive, "context length in tokens, image tokens excluded"),
            p("rope_theta", FLOAT, D::Float(10000.0), C::Positive, "base of the rotary position frequencies"),
            p("weights", Ty::Path, D::Absent, C::None, "a checkpoint to start from"),
        ],
        tags: &[Tag::Decoder],
        needs: &[],
        doc: "A causal transformer decoder that reads projected image tokens, then text (PE-lang's language model).",
    },
    Constructor {
        name: "mlp_projector",
        kind: Kind::Model,
        params: &[
            p("layers", INT, D::Int(2), C::Positive, "number of linear layers (GELU between them)"),
            p("out", INT, D::Required, C::Positive, "output width: the decoder's width"),
            p("input", Ty::Tap, D::Absent, C::None, "the vision block it reads (default: the tower's last); later blocks are dropped"),
            p("weights", Ty::Path, D::Absent, C::None, "a checkpoint to start from"),
        ],
        tags: &[Tag::Projector],
        needs: &[],
        doc: "An MLP from vision tokens to decoder tokens (PE-lang's projector).",
    },
    // ------------------------------------------------------------------ pooling and positions
    Constructor {
        name: "attention",
        kind: Kind::Pool,
        params: &[p("heads", INT, D::Int(8), C::Positive, "heads of the probe's attention")],
        tags: &[],
        needs: &[],
        doc: "Attention pooling: a learned probe query attends over all tokens, then x + MLP(LN(x)).",
    },
    bare("cls", Kind::Pool, "The class token's output is the embedding."),
    bare("mean", Kind::Pool, "The mean of the output tokens is the embedding."),
    bare("none", Kind::Pool, "No pooling: the tower outputs tokens."),
    bare("rope2d", Kind::PosEmb, "2D rotary embedding in every attention layer (x on half the head, y on the other)."),
    bare("abs", Kind::PosEmb, "A learned absolute position table, bilinearly interpolated to the current grid."),
    bare("fp32", Kind::Precision, "32-bit floating point everywhere."),
    bare("bf16", Kind::Precision, "bfloat16 compute with fp32 master weights."),
    // ------------------------------------------------------------------ data
    Constructor {
        name: "synthetic_shapes",
        kind: Kind::Data,
        params: &[
            p("count", COUNT, D::Required, C::Positive, "number of distinct images"),
            p("seed", INT, D::Int(0), C::NonNegative, "generator seed"),
            p("classes", INT, D::Int(8), C::AtLeast(2), "number of shape classes"),
            p("held_out", FRAC, D::Float(0.1), C::Fraction, "fraction kept for evaluation"),
        ],
        tags: &[],
        needs: &[],
        doc: "Images of coloured shapes with captions that describe them and per-pixel masks, generated in-process.",
    },
    Constructor {
        name: "synthetic_video",
        kind: Kind::Data,
        params: &[
            p("count", COUNT, D::Required, C::Positive, "number of distinct clips"),
            p("frames", INT, D::Required, C::AtLeast(1), "frames per clip"),
            p("seed", INT, D::Int(0), C::NonNegative, "generator seed"),
            p("held_out", FRAC, D::Float(0.1), C::Fraction, "fraction kept for evaluation"),
        ],
        tags: &[Tag::Video],
        needs: &[],
        doc: "Clips of shapes that move, change colour or size, with captions that name the motion.",
    },
    Constructor {
        name: "image_text",
        kind: Kind::Data,
        params: &[
            p("root", Ty::Path, D::Required, C::None, "directory of images"),
            p("captions", Ty::Path, D::Required, C::None, "JSONL of {\"image\", \"text\"}, relative to root"),
            p("augment", Ty::List(&Ty::Of(Kind::Augment)), D::EmptyList, C::None, "augmentations, in order"),
            p("tokenizer", Ty::Path, D::Absent, C::None, "a HuggingFace tokenizer.json (default: a byte-level BPE learned from the training captions)"),
            ON_BAD,
        ],
        tags: &[],
        needs: &[],
        doc: "PNG/JPEG images with captions from a JSONL file.",
    },
    Constructor {
        name: "video_text",
        kind: Kind::Data,
        params: &[
            p("root", Ty::Path, D::Required, C::None, "directory of clips, one folder of PNG/JPEG frames per clip"),
            p("captions", Ty::Path, D::Required, C::None, "JSONL of {\"video\": folder, \"text\"}, relative to root"),
            p("augment", Ty::List(&Ty::Of(Kind::Augment)), D::EmptyList, C::None, "augmentations, the same on every frame of a clip"),
            p("tokenizer", Ty::Path, D::Absent, C::None, "a HuggingFace tokenizer.json (default: a byte-level BPE learned from the training captions)"),
        ],
        tags: &[Tag::Video],
        needs: &[],
        doc: "Video clips as folders of frames, with captions from a JSONL file.",
    },
    Constructor {
        name: "webdataset",
        kind: Kind::Data,
        params: &[
            p("shards", Ty::Path, D::Required, C::None, "tar shards, with brace ranges: data/{00000..00099}.tar"),
            p("image", Ty::Str, D::Str("jpg"), C::None, "extension of the image member"),
            p("text", Ty::Str, D::Str("txt"), C::None, "extension of the caption member"),
            p("augment", Ty::List(&Ty::Of(Kind::Augment)), D::EmptyList, C::None, "augmentations, in order"),
            p("tokenizer", Ty::Path, D::Absent, C::None, "a HuggingFace tokenizer.json (default: a byte-level BPE learned from the training captions)"),
            ON_BAD,
        ],
        tags: &[],
        needs: &[],
        doc: "Image-text pairs from WebDataset tar shards, grouped by key.",
    },
    // ------------------------------------------------------------------ augmentations
    Constructor {
        name: "random_resized_crop",
        kind: Kind::Augment,
        params: &[
            p("scale", PAIR_F, D::Numbers(&[0.08, 1.0]), C::None, "range of the crop's area, as a fraction of the image"),
            p("ratio", PAIR_F, D::Numbers(&[0.75, 1.3333333333333333]), C::None, "range of the crop's aspect ratio"),
        ],
        tags: &[],
        needs: &[],
        doc: "Crop a random area and aspect ratio, then resize to the phase's resolution.",
    },
    Constructor {
        name: "aspect_jitter",
        kind: Kind::Augment,
        params: &[p("range", PAIR_F, D::Numbers(&[0.75, 1.33]), C::None, "range of the aspect-ratio change")],
        tags: &[],
        needs: &[],
        doc: "Stretch the image by a random aspect ratio.",
    },
    Constructor {
        name: "color_jitter",
        kind: Kind::Augment,
        params: &[
            p("brightness", FLOAT, D::Float(0.0), C::NonNegative, "maximum relative brightness change"),
            p("contrast", FLOAT, D::Float(0.0), C::NonNegative, "maximum relative contrast change"),
            p("saturation", FLOAT, D::Float(0.0), C::NonNegative, "maximum relative saturation change"),
            p("hue", FLOAT, D::Float(0.0), C::NonNegative, "maximum hue shift, in turns"),
        ],
        tags: &[],
        needs: &[],
        doc: "Random brightness, contrast, saturation and hue changes.",
    },
    Constructor {
        name: "hflip",
        kind: Kind::Augment,
        params: &[p("p", FRAC, D::Float(0.5), C::Fraction, "probability of a flip")],
        tags: &[],
        needs: &[],
        doc: "Flip horizontally with probability p.",
    },
    // ------------------------------------------------------------------ optimizers
    Constructor {
        name: "adamw",
        kind: Kind::Optimizer,
        params: &[
            p("lr", FLOAT, D::Required, C::Positive, "peak learning rate"),
            p("betas", PAIR_F, D::Numbers(&[0.9, 0.999]), C::None, "moment decay rates"),
            p("weight_decay", FLOAT, D::Required, C::NonNegative, "decoupled weight decay (not on norms, biases, logit scale)"),
            p("eps", FLOAT, D::Float(1e-8), C::Positive, "denominator epsilon (PyTorch's default)"),
        ],
        tags: &[],
        needs: &[],
        doc: "AdamW with decoupled weight decay, PyTorch's conventions.",
    },
    Constructor {
        name: "lamb",
        kind: Kind::Optimizer,
        params: &[
            p("lr", FLOAT, D::Required, C::Positive, "peak learning rate"),
            p("betas", PAIR_F, D::Required, C::None, "moment decay rates"),
            p("weight_decay", FLOAT, D::Required, C::NonNegative, "weight decay (not on norms, biases, logit scale)"),
            OPT_EPS,
        ],
        tags: &[],
        needs: &[],
        doc: "LAMB: Adam with a per-layer trust ratio, for large batches.",
    },
    // ------------------------------------------------------------------ schedules
    Constructor {
        name: "warmup",
        kind: Kind::Schedule,
        params: &[p("steps", COUNT, D::Required, C::Positive, "steps of linear warmup from 0 to the peak")],
        tags: &[],
        needs: &[],
        doc: "Linear warmup from 0 to the optimizer's learning rate.",
    },
    Constructor {
        name: "cosine",
        kind: Kind::Schedule,
        params: &[
            p("final", FLOAT, D::Float(0.0), C::NonNegative, "final learning rate, relative to the peak"),
            p("steps", COUNT, D::Absent, C::Positive, "length (default: the rest of the stage)"),
        ],
        tags: &[],
        needs: &[],
        doc: "Cosine decay from the peak to final x peak.",
    },
    Constructor {
        name: "linear",
        kind: Kind::Schedule,
        params: &[
            p("final", FLOAT, D::Float(0.0), C::NonNegative, "final learning rate, relative to the peak"),
            p("steps", COUNT, D::Absent, C::Positive, "length (default: the rest of the stage)"),
        ],
        tags: &[],
        needs: &[],
        doc: "Linear decay from the peak to final x peak.",
    },
    Constructor {
        name: "constant",
        kind: Kind::Schedule,
        params: &[p("steps", COUNT, D::Absent, C::Positive, "length (default: the rest of the stage)")],
        tags: &[],
        needs: &[],
        doc: "The peak learning rate, unchanged.",
    },
    // ------------------------------------------------------------------ losses
    Constructor {
        name: "clip",
        kind: Kind::Loss,
        params: &[
            p("max_logit_scale", FLOAT, D::Float(100.0), C::Positive, "clamp of the learnable logit scale"),
            p("init_logit_scale", FLOAT, D::Float(14.285714285714286), C::Positive, "initial scale (1/0.07)"),
        ],
        tags: &[],
        needs: &[Tag::Vision, Tag::TextEncoder],
        doc: "InfoNCE in both directions over the batch's image-text similarities.",
    },
    Constructor {
        name: "siglip",
        kind: Kind::Loss,
        params: &[
            p("init_logit_scale", FLOAT, D::Float(10.0), C::Positive, "initial scale"),
            p("init_bias", FLOAT, D::Float(-10.0), C::None, "initial logit bias"),
        ],
        tags: &[],
        needs: &[Tag::Vision, Tag::TextEncoder],
        doc: "Pairwise sigmoid loss over every image-text pair of the batch.",
    },
    Constructor {
        name: "mask_regularization",
        kind: Kind::Loss,
        params: &[
            p("fraction", FRAC, D::Required, C::Fraction, "fraction of the batch duplicated and masked"),
            p("ratio", FRAC, D::Required, C::Fraction, "fraction of the copy's patch tokens masked"),
        ],
        tags: &[],
        needs: &[Tag::Vision],
        doc: "Masked copies' tokens pulled to the unmasked tokens by cosine similarity (gradients disjoint).",
    },
    Constructor {
        name: "distill_kl",
        kind: Kind::Loss,
        params: &[
            p("teacher", Ty::TeacherTap, D::Required, C::None, "a frozen CLIP teacher (`frozen(stage)`)"),
            p("teacher_logit_scale", FLOAT, D::Float(200.0), C::Positive, "fixed teacher logit scale"),
        ],
        tags: &[],
        needs: &[Tag::Vision, Tag::TextEncoder],
        doc: "KL divergence between the teacher's and the student's image->text and text->image distributions.",
    },
    Constructor {
        name: "token_cosine",
        kind: Kind::Loss,
        params: &[
            p("student", Ty::Tap, D::Required, C::None, "the student's tokens"),
            p("teacher", Ty::TeacherTap, D::Required, C::None, "the teacher's tokens"),
            p("project", Ty::Bool, D::Bool(false), C::None, "learn a linear map when the widths differ"),
        ],
        tags: &[],
        needs: &[],
        doc: "1 - cosine similarity between student and teacher tokens, averaged over all tokens.",
    },
    Constructor {
        name: "pairwise_similarity",
        kind: Kind::Loss,
        params: &[
            p("student", Ty::Tap, D::Required, C::None, "the student's tokens"),
            p("teacher", Ty::TeacherTap, D::Required, C::None, "the teacher's tokens or mask logits"),
            p("temperature", FLOAT, D::Float(20.0), C::Positive, "t in exp(t(x - 1)) applied to teacher similarities"),
        ],
        tags: &[],
        needs: &[],
        doc: "MSE between the student's and the teacher's token cosine-similarity matrices.",
    },
    Constructor {
        name: "next_token",
        kind: Kind::Loss,
        params: &[],
        tags: &[],
        needs: &[Tag::Vision, Tag::Projector, Tag::Decoder],
        doc: "Next-token cross-entropy of the decoder on captions, conditioned on projected image tokens.",
    },
    // ------------------------------------------------------------------ regularizers
    Constructor {
        name: "drop_path",
        kind: Kind::Regularizer,
        params: &[p("p", FLOAT, D::Required, C::Probability, "stochastic depth rate at the last block")],
        tags: &[],
        needs: &[],
        doc: "Stochastic depth on the trained vision towers.",
    },
    Constructor {
        name: "layer_scale",
        kind: Kind::Regularizer,
        params: &[p("init", FLOAT, D::Required, C::Positive, "initial LayerScale value")],
        tags: &[],
        needs: &[],
        doc: "LayerScale on every residual branch of the trained vision towers.",
    },
    Constructor {
        name: "token_mask",
        kind: Kind::Regularizer,
        params: &[
            p("ratio", FRAC, D::Required, C::Fraction, "fraction of patch tokens masked"),
            p("block", PAIR_I, D::Numbers(&[1.0, 1.0]), C::None, "masks are blocks of this many tokens (rows, columns)"),
        ],
        tags: &[],
        needs: &[],
        doc: "Mask the student's input tokens in blocks (PE-spatial: 0.75 in 2x2 blocks).",
    },
    // ------------------------------------------------------------------ teachers
    Constructor {
        name: "frozen",
        kind: Kind::Teacher,
        params: &[
            p("model", Ty::ModelOrStage, D::Required, C::None, "the model to freeze: `core.vision`, or a stage for its whole CLIP"),
            p("text", Ty::ModelName, D::Absent, C::None, "with a vision tower: its text tower, for a frozen CLIP from checkpoints"),
        ],
        tags: &[],
        needs: &[],
        doc: "A frozen copy of a model; `.layer(k)` taps block k (1-based, negative from the end).",
    },
    Constructor {
        name: "mask_logits",
        kind: Kind::Teacher,
        params: &[
            p("source", Ty::Path, D::Required, C::None, "directory of per-image mask-logit maps, or \"synthetic\""),
            p("grid", PAIR_I, D::Numbers(&[32.0, 32.0]), C::None, "the point-prompt grid (rows, columns)"),
        ],
        tags: &[],
        needs: &[],
        doc: "Mask-logit maps of a segmenter (SAM 2.1 in the paper) as a teacher of token similarities.",
    },
    // ------------------------------------------------------------------ video and captioning
    Constructor {
        name: "frame_pool",
        kind: Kind::FramePool,
        params: &[p("frames", INT, D::Int(8), C::AtLeast(1), "frames sampled uniformly per clip")],
        tags: &[],
        needs: &[],
        doc: "Per-frame image embeddings averaged into one video embedding.",
    },
    Constructor {
        name: "captioner",
        kind: Kind::Captioner,
        params: &[
            p("vision", Ty::ModelName, D::Required, C::None, "the vision tower (`lang.vision`)"),
            p("projector", Ty::ModelName, D::Required, C::None, "the projector (`lang.proj`)"),
            p("decoder", Ty::ModelName, D::Required, C::None, "the decoder (`lang.decoder`)"),
            p("max_tokens", INT, D::Int(32), C::Positive, "longest caption generated"),
        ],
        tags: &[],
        needs: &[],
        doc: "A trained captioner that writes a caption for every clip of the stage's data (the data engine).",
    },
];

const fn bare(name: &'static str, kind: Kind, doc: &'static str) -> Constructor {
    Constructor {
        name,
        kind,
        params: &[],
        tags: &[Tag::Bare],
        needs: &[],
        doc,
    }
}

/// The constructor of this name.
pub fn constructor(name: &str) -> Option<&'static Constructor> {
    CONSTRUCTORS.iter().find(|c| c.name == name)
}

/// A field of a stage block.
#[derive(Clone, Copy, Debug)]
pub struct StageField {
    pub name: &'static str,
    pub ty: Ty,
    pub constraint: Constraint,
    /// Whether a phase may set it (phases inherit every field they do not set).
    pub in_phase: bool,
    pub doc: &'static str,
}

const fn f(
    name: &'static str,
    ty: Ty,
    constraint: Constraint,
    in_phase: bool,
    doc: &'static str,
) -> StageField {
    StageField {
        name,
        ty,
        constraint,
        in_phase,
        doc,
    }
}

/// Units of work: at most one per phase.
pub const UNITS: &[&str] = &["steps", "samples", "epochs"];

/// Every field a stage block may hold.
pub static STAGE_FIELDS: &[StageField] = &[
    f(
        "init",
        Ty::Stage,
        C::None,
        false,
        "start from this stage's trained weights",
    ),
    f(
        "train",
        Ty::List(&Ty::ModelName),
        C::None,
        true,
        "the models this stage (or phase) trains",
    ),
    f(
        "freeze",
        Ty::List(&Ty::ModelName),
        C::None,
        true,
        "models the stage uses without training them",
    ),
    f(
        "data",
        Ty::Of(Kind::Data),
        C::None,
        true,
        "the training data",
    ),
    f(
        "optimizer",
        Ty::Of(Kind::Optimizer),
        C::None,
        true,
        "the optimizer",
    ),
    f(
        "lr",
        Ty::List(&Ty::Of(Kind::Schedule)),
        C::None,
        true,
        "learning-rate schedule segments, in order",
    ),
    f("batch", COUNT, C::Positive, true, "global batch size"),
    f(
        "loss",
        Ty::Of(Kind::Loss),
        C::None,
        true,
        "a weighted sum of loss terms",
    ),
    f("steps", COUNT, C::Positive, true, "optimizer steps"),
    f(
        "samples",
        COUNT,
        C::Positive,
        true,
        "samples seen (converted to steps with the batch, rounding up)",
    ),
    f("epochs", COUNT, C::Positive, true, "passes over the data"),
    f("resolution", INT, C::Positive, true, "image side in pixels"),
    f(
        "regularize",
        Ty::List(&Ty::Of(Kind::Regularizer)),
        C::None,
        true,
        "regularizers of the trained vision towers",
    ),
    f(
        "video",
        Ty::Of(Kind::FramePool),
        C::None,
        true,
        "how clips become one embedding",
    ),
    f(
        "caption",
        Ty::Of(Kind::Captioner),
        C::None,
        false,
        "make this a data-engine stage that captions its data",
    ),
    f(
        "devices",
        INT,
        C::Positive,
        false,
        "data-parallel devices; the batch is split across them",
    ),
    f(
        "accumulate",
        INT,
        C::Positive,
        true,
        "gradient-accumulation steps per optimizer step",
    ),
    f(
        "clip_grad",
        FLOAT,
        C::Positive,
        true,
        "clip the global gradient norm to this value",
    ),
    f(
        "precision",
        Ty::Of(Kind::Precision),
        C::None,
        true,
        "compute precision",
    ),
    f(
        "seed",
        INT,
        C::NonNegative,
        false,
        "random seed of the stage",
    ),
    f(
        "skip_nonfinite",
        INT,
        C::NonNegative,
        false,
        "steps whose loss or gradient is not finite that may be skipped (no update, counted) before the stage stops; 0 (the default) stops at the first",
    ),
];

/// The stage field of this name.
pub fn stage_field(name: &str) -> Option<&'static StageField> {
    STAGE_FIELDS.iter().find(|f| f.name == name)
}
