//! `Tokenizer`: byte-level BPE learned from captions, or read from a HuggingFace
//! `tokenizer.json`; CLIP's row layout (SOT, tokens, EOT, padding).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use crate::error::DataError;

/// How text is cut into words before BPE (merges never cross a word boundary).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Words {
    /// GPT-2's pattern: contractions, ` ?letters`, ` ?digits`, ` ?other`, whitespace;
    /// the words concatenate back to the text, so decoding is exact.
    Gpt2,
    /// CLIP's pattern: contractions, letters, single digits, other runs; whitespace is
    /// dropped (each word ends in the end-of-word suffix instead).
    Clip,
    /// `\w+|[^\w\s]+`.
    Whitespace,
    /// Split on whitespace.
    WhitespaceSplit,
    /// The whole text is one word.
    Whole,
}

/// A text normalisation step.
#[derive(Clone, Debug, PartialEq)]
enum Norm {
    Lowercase,
    Strip,
    /// Runs of whitespace become this.
    Whitespace(String),
    Replace(String, String),
}

struct Inner {
    vocab: usize,
    sot: i64,
    eot: i64,
    norms: Vec<Norm>,
    words: Words,
    add_prefix_space: bool,
    /// GPT-2's bytes-to-unicode: BPE runs over the characters that stand for bytes.
    byte_level: bool,
    suffix: Option<String>,
    /// An initial symbol (one character, maybe with the suffix) -> id.
    symbols: HashMap<String, u32>,
    /// (left, right) -> (rank, merged id).
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// id -> token text, for decoding (`None`: special or unused).
    tokens: Vec<Option<String>>,
    unk: Option<u32>,
}

/// A BPE tokenizer; cheap to clone (shared tables).
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab", &self.inner.vocab)
            .field("merges", &self.inner.merges.len())
            .finish()
    }
}

/// GPT-2's map from bytes to printable characters.
fn bytes_to_unicode() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        let c = if printable {
            b
        } else {
            n += 1;
            255 + n
        };
        out[b as usize] = char::from_u32(c).unwrap_or('?');
    }
    out
}

fn is_other(c: char) -> bool {
    !c.is_whitespace() && !c.is_alphabetic() && !c.is_numeric()
}

const CONTRACTIONS: [&str; 7] = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"];

/// Cuts `s` into words by `mode`.
fn split_words(s: &str, mode: Words) -> Vec<&str> {
    let chars: Vec<(usize, char)> = s.char_indices().collect();
    let end_of = |i: usize| chars.get(i).map_or(s.len(), |c| c.0);
    let run = |mut i: usize, f: &dyn Fn(char) -> bool| {
        while i < chars.len() && f(chars[i].1) {
            i += 1;
        }
        i
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i].1;
        let start = chars[i].0;
        let rest = &s[start..];
        let j = match mode {
            Words::Whole => chars.len(),
            Words::WhitespaceSplit => {
                if c.is_whitespace() {
                    i = run(i, &|c| c.is_whitespace());
                    continue;
                }
                run(i, &|c| !c.is_whitespace())
            }
            Words::Whitespace => {
                let word = |c: char| c.is_alphanumeric() || c == '_';
                if c.is_whitespace() {
                    i = run(i, &|c| c.is_whitespace());
                    continue;
                }
                if word(c) {
                    run(i, &word)
                } else {
                    run(i, &|c| !word(c) && !c.is_whitespace())
                }
            }
            Words::Clip | Words::Gpt2 => {
                if let Some(k) = CONTRACTIONS.iter().find(|k| rest.starts_with(**k)) {
                    i + k.chars().count()
                } else if mode == Words::Clip {
                    if c.is_whitespace() {
                        i = run(i, &|c| c.is_whitespace());
                        continue;
                    }
                    if c.is_alphabetic() {
                        run(i, &|c| c.is_alphabetic())
                    } else if c.is_numeric() {
                        i + 1
                    } else {
                        run(i, &is_other)
                    }
                } else {
                    // ` ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
                    let k = if c == ' ' && i + 1 < chars.len() && !chars[i + 1].1.is_whitespace() {
                        i + 1
                    } else {
                        i
                    };
                    let d = chars[k].1;
                    if d.is_alphabetic() {
                        run(k, &|c| c.is_alphabetic())
                    } else if d.is_numeric() {
                        run(k, &|c| c.is_numeric())
                    } else if is_other(d) {
                        run(k, &is_other)
                    } else {
                        let e = run(i, &|c| c.is_whitespace());
                        if e < chars.len() && e - i >= 2 {
                            e - 1
                        } else {
                            e.max(i + 1)
                        }
                    }
                }
            }
        };
        out.push(&s[start..end_of(j)]);
        i = j;
    }
    out
}

impl Inner {
    fn normalise(&self, text: &str) -> String {
        let mut s = text.to_string();
        for n in &self.norms {
            s = match n {
                Norm::Lowercase => s.to_lowercase(),
                Norm::Strip => s.trim().to_string(),
                Norm::Whitespace(with) => collapse_whitespace(&s, with),
                Norm::Replace(a, b) if !a.is_empty() => s.replace(a.as_str(), b),
                Norm::Replace(..) => s,
            };
        }
        if self.add_prefix_space && !s.starts_with(' ') {
            s.insert(0, ' ');
        }
        s
    }

    /// The ids of one word.
    fn word_ids(&self, word: &str, b2u: &[char; 256], out: &mut Vec<i64>) {
        let mapped: String = if self.byte_level {
            word.bytes().map(|b| b2u[b as usize]).collect()
        } else {
            word.to_string()
        };
        let n = mapped.chars().count();
        let mut syms: Vec<u32> = Vec::with_capacity(n);
        for (i, c) in mapped.chars().enumerate() {
            let mut t = c.to_string();
            if i + 1 == n {
                if let Some(sfx) = &self.suffix {
                    t.push_str(sfx);
                }
            }
            match self.symbols.get(&t).copied().or(self.unk) {
                Some(id) => syms.push(id),
                None => continue,
            }
        }
        apply_merges(&mut syms, &self.merges);
        out.extend(syms.into_iter().map(i64::from));
    }
}

/// `\s+` -> `with`.
fn collapse_whitespace(s: &str, with: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_ws = false;
    for c in s.chars() {
        if c.is_whitespace() {
            if !in_ws {
                out.push_str(with);
            }
            in_ws = true;
        } else {
            out.push(c);
            in_ws = false;
        }
    }
    out
}

/// Merges the lowest-ranked adjacent pair everywhere, until no pair has a merge.
fn apply_merges(syms: &mut Vec<u32>, merges: &HashMap<(u32, u32), (u32, u32)>) {
    loop {
        let best = syms
            .windows(2)
            .filter_map(|w| {
                merges
                    .get(&(w[0], w[1]))
                    .map(|&(rank, id)| (rank, (w[0], w[1]), id))
            })
            .min();
        let Some((_, pair, id)) = best else {
            return;
        };
        merge_pair(syms, pair, id);
    }
}

/// Replaces every non-overlapping occurrence of `pair`, left to right, by `id`.
fn merge_pair(syms: &mut Vec<u32>, pair: (u32, u32), id: u32) {
    let mut out = Vec::with_capacity(syms.len());
    let mut i = 0;
    while i < syms.len() {
        if i + 1 < syms.len() && (syms[i], syms[i + 1]) == pair {
            out.push(id);
            i += 2;
        } else {
            out.push(syms[i]);
            i += 1;
        }
    }
    *syms = out;
}

impl Tokenizer {
    /// A byte-level BPE learned from `captions`: id 0 is padding, bytes are ids 1..=256,
    /// merges follow in the order learned, and SOT, EOT are `vocab - 2`, `vocab - 1`.
    /// Text is lowercased and cut into GPT-2 words (a space belongs to the word after
    /// it), so decoding gives back the lowercased text exactly. Merges are learned by
    /// pair frequency within words, ties to the smaller ids, until the vocabulary is full
    /// or no pair occurs twice. A `vocab` too small for the 256 bytes (below 259) folds
    /// bytes onto the ids there are (decoding is then lossy); below 4 it is taken as 4.
    pub fn bytes_bpe(captions: &[&str], vocab: usize) -> Tokenizer {
        let vocab = vocab.max(4);
        let b2u = bytes_to_unicode();
        let base = (vocab - 3).min(256);
        let mut tokens: Vec<Option<String>> = vec![None; vocab];
        let mut symbols = HashMap::new();
        for (b, c) in b2u.iter().enumerate() {
            let id = 1 + b % base;
            symbols.insert(c.to_string(), id as u32);
            if tokens[id].is_none() {
                tokens[id] = Some(c.to_string());
            }
        }
        // Word frequencies, then each distinct word as symbols.
        let mut freq: HashMap<&str, u64> = HashMap::new();
        let lowered: Vec<String> = captions.iter().map(|c| c.to_lowercase()).collect();
        for c in &lowered {
            for w in split_words(c, Words::Gpt2) {
                *freq.entry(w).or_insert(0) += 1;
            }
        }
        let mut distinct: Vec<(&str, u64)> = freq.into_iter().collect();
        distinct.sort_unstable();
        let mut words: Vec<(Vec<u32>, i64)> = distinct
            .into_iter()
            .map(|(w, n)| {
                (
                    w.bytes().map(|b| 1 + (b as usize % base) as u32).collect(),
                    n as i64,
                )
            })
            .collect();
        let mut counts: HashMap<(u32, u32), i64> = HashMap::new();
        let mut wheres: HashMap<(u32, u32), HashSet<usize>> = HashMap::new();
        for (wi, (syms, n)) in words.iter().enumerate() {
            for p in syms.windows(2) {
                *counts.entry((p[0], p[1])).or_insert(0) += n;
                wheres.entry((p[0], p[1])).or_default().insert(wi);
            }
        }
        let mut heap: BinaryHeap<(i64, Reverse<u32>, Reverse<u32>)> = counts
            .iter()
            .map(|(&(a, b), &n)| (n, Reverse(a), Reverse(b)))
            .collect();
        let mut merges = HashMap::new();
        // Merged ids run from 257 (or after the folded bytes) up to vocab - 3.
        let mut next = (base + 1) as u32;
        while (next as usize) < vocab - 2 {
            let Some((n, Reverse(a), Reverse(b))) = heap.pop() else {
                break;
            };
            let pair = (a, b);
            if counts.get(&pair) != Some(&n) || merges.contains_key(&pair) {
                continue; // stale
            }
            if n < 2 {
                break;
            }
            let id = next;
            next += 1;
            merges.insert(pair, (merges.len() as u32, id));
            let text = format!(
                "{}{}",
                tokens[a as usize].as_deref().unwrap_or(""),
                tokens[b as usize].as_deref().unwrap_or("")
            );
            tokens[id as usize] = Some(text);
            let mut touched = HashSet::new();
            for wi in wheres.remove(&pair).unwrap_or_default() {
                let (syms, n) = &mut words[wi];
                for p in syms.windows(2) {
                    *counts.entry((p[0], p[1])).or_insert(0) -= *n;
                    touched.insert((p[0], p[1]));
                }
                merge_pair(syms, pair, id);
                for p in syms.windows(2) {
                    *counts.entry((p[0], p[1])).or_insert(0) += *n;
                    wheres.entry((p[0], p[1])).or_default().insert(wi);
                    touched.insert((p[0], p[1]));
                }
            }
            counts.insert(pair, 0);
            for p in touched {
                let n = counts.get(&p).copied().unwrap_or(0);
                if n >= 2 && p != pair {
                    heap.push((n, Reverse(p.0), Reverse(p.1)));
                }
            }
        }
        Tokenizer {
            inner: Arc::new(Inner {
                vocab,
                sot: vocab as i64 - 2,
                eot: vocab as i64 - 1,
                norms: vec![Norm::Lowercase],
                words: Words::Gpt2,
                add_prefix_space: false,
                byte_level: true,
                suffix: None,
                symbols,
                merges,
                tokens,
                unk: None,
            }),
        }
    }

    /// Reads a HuggingFace `tokenizer.json` with a BPE model: GPT-2 style (ByteLevel
    /// pre-tokenizer) or CLIP style (`end_of_word_suffix` `</w>`, lowercasing). SOT and
    /// EOT are the `<|startoftext|>` and `<|endoftext|>` tokens where it has them, else
    /// the last two ids. Unicode normalisation forms (NFC, ...) are accepted and not
    /// applied: exact for text already in that form, such as ASCII.
    pub fn from_hf_json(path: &Path) -> Result<Tokenizer, DataError> {
        let err = |message: String| DataError::Tokenizer {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
        let root: Value = serde_json::from_str(&text).map_err(|e| err(format!("not JSON: {e}")))?;
        let model = root.get("model").ok_or_else(|| err("no `model`".into()))?;
        match model.get("type").and_then(Value::as_str) {
            Some("BPE") | None => {}
            Some(other) => return Err(err(format!("a `{other}` model; only BPE is supported"))),
        }
        if model.get("byte_fallback").and_then(Value::as_bool) == Some(true) {
            return Err(err("`byte_fallback` BPE is not supported".into()));
        }
        if let Some(p) = model
            .get("continuing_subword_prefix")
            .and_then(Value::as_str)
        {
            if !p.is_empty() {
                return Err(err(format!(
                    "a `continuing_subword_prefix` (`{p}`) is not supported"
                )));
            }
        }
        let suffix = model
            .get("end_of_word_suffix")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let vocab_map = model
            .get("vocab")
            .and_then(Value::as_object)
            .ok_or_else(|| err("`model.vocab` must be an object of token -> id".into()))?;
        let mut ids: HashMap<String, u32> = HashMap::new();
        let mut size = 0usize;
        for (tok, id) in vocab_map {
            let id = id
                .as_u64()
                .filter(|&i| i < u32::MAX as u64)
                .ok_or_else(|| err(format!("the id of `{tok}` is not a whole number")))?;
            ids.insert(tok.clone(), id as u32);
            size = size.max(id as usize + 1);
        }
        let mut specials: HashMap<String, u32> = HashMap::new();
        for t in root
            .get("added_tokens")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let (Some(id), Some(content)) = (
                t.get("id").and_then(Value::as_u64),
                t.get("content").and_then(Value::as_str),
            ) {
                if id < u32::MAX as u64 {
                    specials.insert(content.to_string(), id as u32);
                    size = size.max(id as usize + 1);
                }
            }
        }
        if size < 3 {
            return Err(err("the vocabulary has fewer than 3 tokens".into()));
        }
        let merges_v = model
            .get("merges")
            .and_then(Value::as_array)
            .ok_or_else(|| err("`model.merges` must be a list".into()))?;
        let mut merges = HashMap::new();
        for (rank, m) in merges_v.iter().enumerate() {
            let (a, b) = match m {
                Value::String(s) => s
                    .split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| err(format!("merge {rank} (`{s}`) is not two tokens")))?,
                Value::Array(v) => match v.as_slice() {
                    [Value::String(a), Value::String(b)] => (a.clone(), b.clone()),
                    _ => return Err(err(format!("merge {rank} is not a pair of strings"))),
                },
                _ => return Err(err(format!("merge {rank} is not a string or a pair"))),
            };
            let lookup = |t: &str| {
                ids.get(t)
                    .copied()
                    .ok_or_else(|| err(format!("merge {rank}: `{t}` is not in the vocabulary")))
            };
            let merged = lookup(&format!("{a}{b}"))?;
            merges
                .entry((lookup(&a)?, lookup(&b)?))
                .or_insert((rank as u32, merged));
        }
        let mut norms = Vec::new();
        if let Some(n) = root.get("normalizer").filter(|v| !v.is_null()) {
            parse_normalizer(n, &mut norms).map_err(err)?;
        }
        let mut cfg = PreCfg {
            words: None,
            byte_level: false,
            add_prefix_space: false,
        };
        if let Some(p) = root.get("pre_tokenizer").filter(|v| !v.is_null()) {
            parse_pre(p, &mut cfg).map_err(err)?;
        }
        let mut tokens = vec![None; size];
        for (t, &id) in &ids {
            tokens[id as usize] = Some(t.clone());
        }
        let find = |name: &str| {
            specials
                .get(name)
                .or_else(|| ids.get(name))
                .map(|&i| i as i64)
        };
        let sot = find("<|startoftext|>").unwrap_or(size as i64 - 2);
        let eot = find("<|endoftext|>").unwrap_or(size as i64 - 1);
        for (_, &id) in specials.iter() {
            tokens[id as usize] = None;
        }
        let unk = model
            .get("unk_token")
            .and_then(Value::as_str)
            .and_then(|u| ids.get(u).or_else(|| specials.get(u)).copied());
        Ok(Tokenizer {
            inner: Arc::new(Inner {
                vocab: size,
                sot,
                eot,
                norms,
                words: cfg.words.unwrap_or(if cfg.byte_level {
                    Words::Gpt2
                } else {
                    Words::Whole
                }),
                add_prefix_space: cfg.add_prefix_space,
                byte_level: cfg.byte_level,
                suffix,
                // Every vocabulary entry can start a word: single characters are what
                // words are cut into, and only those are looked up.
                symbols: ids,
                merges,
                tokens,
                unk,
            }),
        })
    }

    /// CLIP's row: `[SOT, tokens.., EOT, 0, ..]` of exactly `context` ids; a text too
    /// long is cut and its last id set to EOT. Returns the row and the index of EOT.
    pub fn encode(&self, text: &str, context: usize) -> (Vec<i64>, usize) {
        let inner = &self.inner;
        if context == 0 {
            return (Vec::new(), 0);
        }
        let b2u = bytes_to_unicode();
        let norm = inner.normalise(text);
        let mut row = vec![inner.sot];
        for w in split_words(&norm, inner.words) {
            inner.word_ids(w, &b2u, &mut row);
            if row.len() >= context {
                break;
            }
        }
        row.truncate(context - 1);
        row.push(inner.eot);
        let eot = row.len() - 1;
        row.resize(context, 0);
        (row, eot)
    }

    /// Whether `encode(text, context)` cuts `text`: its tokens with SOT and EOT do not
    /// fit in `context` ids.
    pub fn truncates(&self, text: &str, context: usize) -> bool {
        let inner = &self.inner;
        let b2u = bytes_to_unicode();
        let norm = inner.normalise(text);
        let mut row = vec![inner.sot];
        for w in split_words(&norm, inner.words) {
            inner.word_ids(w, &b2u, &mut row);
            if row.len() + 1 > context {
                return true;
            }
        }
        row.len() + 1 > context
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.vocab
    }

    /// The text of `ids`, without SOT, EOT and padding.
    pub fn decode(&self, ids: &[i64]) -> String {
        let inner = &self.inner;
        let mut s = String::new();
        for &id in ids {
            if id == 0 || id == inner.sot || id == inner.eot || id < 0 {
                continue;
            }
            if let Some(Some(t)) = inner.tokens.get(id as usize) {
                s.push_str(t);
            }
        }
        if let Some(sfx) = &inner.suffix {
            s = s.replace(sfx.as_str(), " ");
        }
        if inner.byte_level {
            let b2u = bytes_to_unicode();
            let u2b: HashMap<char, u8> =
                b2u.iter().enumerate().map(|(b, &c)| (c, b as u8)).collect();
            let mut bytes = Vec::with_capacity(s.len());
            for c in s.chars() {
                match u2b.get(&c) {
                    Some(&b) => bytes.push(b),
                    None => {
                        let mut buf = [0u8; 4];
                        bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    }
                }
            }
            s = String::from_utf8_lossy(&bytes).into_owned();
        }
        if inner.suffix.is_some() {
            s.truncate(s.trim_end().len());
        }
        s
    }
}

struct PreCfg {
    words: Option<Words>,
    byte_level: bool,
    add_prefix_space: bool,
}

const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
const CLIP_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

fn parse_pre(v: &Value, cfg: &mut PreCfg) -> Result<(), String> {
    let ty = v.get("type").and_then(Value::as_str).unwrap_or("");
    match ty {
        "Sequence" => {
            for p in v
                .get("pretokenizers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                parse_pre(p, cfg)?;
            }
        }
        "ByteLevel" => {
            cfg.byte_level = true;
            cfg.add_prefix_space = v
                .get("add_prefix_space")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            if v.get("use_regex").and_then(Value::as_bool).unwrap_or(true) {
                cfg.words.get_or_insert(Words::Gpt2);
            }
        }
        "Split" => {
            let pattern = v
                .get("pattern")
                .and_then(|p| p.get("Regex").or_else(|| p.get("String")))
                .and_then(Value::as_str)
                .unwrap_or("");
            let words = match pattern {
                CLIP_PATTERN => Words::Clip,
                GPT2_PATTERN => Words::Gpt2,
                other => {
                    return Err(format!(
                        "a `Split` pre-tokenizer with pattern `{other}` is not supported"
                    ))
                }
            };
            cfg.words = Some(words);
        }
        "Whitespace" => cfg.words = Some(Words::Whitespace),
        "WhitespaceSplit" => cfg.words = Some(Words::WhitespaceSplit),
        other => return Err(format!("the `{other}` pre-tokenizer is not supported")),
    }
    Ok(())
}

fn parse_normalizer(v: &Value, out: &mut Vec<Norm>) -> Result<(), String> {
    let ty = v.get("type").and_then(Value::as_str).unwrap_or("");
    match ty {
        "Sequence" => {
            for n in v
                .get("normalizers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                parse_normalizer(n, out)?;
            }
        }
        "Lowercase" => out.push(Norm::Lowercase),
        "Strip" => out.push(Norm::Strip),
        "NFC" | "NFD" | "NFKC" | "NFKD" => {}
        "BertNormalizer" => {
            if v.get("lowercase").and_then(Value::as_bool).unwrap_or(true) {
                out.push(Norm::Lowercase);
            }
        }
        "Replace" => {
            let content = v
                .get("content")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let p = v.get("pattern");
            if let Some(s) = p.and_then(|p| p.get("String")).and_then(Value::as_str) {
                out.push(Norm::Replace(s.to_string(), content));
            } else if p.and_then(|p| p.get("Regex")).and_then(Value::as_str) == Some(r"\s+") {
                out.push(Norm::Whitespace(content));
            } else {
                return Err(
                    "a `Replace` normalizer other than a string or `\\s+` is not supported".into(),
                );
            }
        }
        other => return Err(format!("the `{other}` normalizer is not supported")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPTIONS: [&str; 6] = [
        "a large red triangle at the top left",
        "a small blue circle at the center",
        "a red circle moving left",
        "a square turning from blue to green",
        "a triangle growing",
        "a large green square at the bottom right",
    ];

    fn learned(vocab: usize) -> Tokenizer {
        let many: Vec<&str> = CAPTIONS.iter().cycle().take(60).copied().collect();
        Tokenizer::bytes_bpe(&many, vocab)
    }

    #[test]
    fn row_layout() {
        let t = learned(400);
        let (ids, eot) = t.encode("a red circle", 16);
        assert_eq!(ids.len(), 16);
        assert_eq!(ids[0], 398);
        assert_eq!(ids[eot], 399);
        assert!(ids[1..eot].iter().all(|&i| i > 0 && i < 398));
        assert!(ids[eot + 1..].iter().all(|&i| i == 0));
        // Too long: cut, with EOT last.
        let (ids, eot) = t.encode(&"zq ".repeat(40), 8);
        assert_eq!((ids.len(), eot, ids[7]), (8, 7, 399));
        assert_eq!(t.encode("", 4), (vec![398, 399, 0, 0], 1));
        assert_eq!(t.encode("abc", 1), (vec![399], 0));
        assert_eq!(t.encode("abc", 0), (vec![], 0));
    }

    #[test]
    fn decode_inverts_encode() {
        let t = learned(320);
        for c in CAPTIONS.iter().chain(&[
            "unseen words: zebra 42, x-ray!",
            "  two  spaces ",
            "ünïcode ok",
        ]) {
            let (ids, _) = t.encode(c, 77);
            assert_eq!(t.decode(&ids), *c);
        }
        assert_eq!(t.decode(&t.encode("Upper Case", 20).0), "upper case");
    }

    #[test]
    fn merges_shorten_common_words_within_the_vocabulary() {
        let bytes = Tokenizer::bytes_bpe(&[], 300);
        let t = learned(300);
        let len = |t: &Tokenizer, s: &str| t.encode(s, 77).1 - 1;
        assert_eq!(len(&bytes, "a red triangle"), 14);
        assert!(
            len(&t, "a red triangle") <= 4,
            "{}",
            len(&t, "a red triangle")
        );
        for vocab in [259, 260, 300, 1000] {
            let t = learned(vocab);
            assert_eq!(t.vocab_size(), vocab);
            for c in CAPTIONS {
                let (ids, _) = t.encode(c, 64);
                assert!(ids.iter().all(|&i| (i as usize) < vocab));
            }
        }
        // Few merges possible: stops when no pair occurs twice, well under a big vocabulary.
        let big = learned(49408);
        assert_eq!(big.vocab_size(), 49408);
        assert!(big.inner.merges.len() < 200);
        // Deterministic.
        let again = learned(49408);
        assert_eq!(big.encode(CAPTIONS[0], 20), again.encode(CAPTIONS[0], 20));
        // A vocabulary too small for the bytes still never exceeds itself.
        let tiny = Tokenizer::bytes_bpe(&CAPTIONS, 100);
        let (ids, _) = tiny.encode("any text at all ~~~", 32);
        assert!(ids.iter().all(|&i| (0..100).contains(&i)));
    }

    fn write(dir: &Path, name: &str, json: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, json).unwrap();
        p
    }

    #[test]
    fn hf_clip_style() {
        // A tiny CLIP-style tokenizer: byte-level characters, `</w>` word ends.
        let dir = tempfile::tempdir().unwrap();
        let mut vocab = serde_json::Map::new();
        let b2u = bytes_to_unicode();
        let mut n = 0;
        for c in b2u {
            vocab.insert(c.to_string(), n.into());
            n += 1;
        }
        for c in b2u {
            vocab.insert(format!("{c}</w>"), n.into());
            n += 1;
        }
        for t in [
            "re",
            "red</w>",
            "ci",
            "cir",
            "cl",
            "cle</w>",
            "circle</w>",
            "<|startoftext|>",
            "<|endoftext|>",
        ] {
            vocab.insert(t.to_string(), n.into());
            n += 1;
        }
        let json = serde_json::json!({
            "version": "1.0",
            "added_tokens": [
                {"id": n - 2, "content": "<|startoftext|>", "special": true},
                {"id": n - 1, "content": "<|endoftext|>", "special": true}
            ],
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "NFC"},
                {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
                {"type": "Lowercase"}
            ]},
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": CLIP_PATTERN}, "behavior": "Removed", "invert": true},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
            ]},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": "<|endoftext|>",
                "continuing_subword_prefix": "", "end_of_word_suffix": "</w>",
                "fuse_unk": false, "byte_fallback": false,
                "vocab": vocab,
                "merges": ["r e", "re d</w>", ["c", "i"], "ci r", "c l", "cl e</w>", "cir cle</w>"]
            }
        });
        let path = write(dir.path(), "tokenizer.json", &json.to_string());
        let t = Tokenizer::from_hf_json(&path).unwrap();
        assert_eq!(t.vocab_size(), n as usize);
        let (ids, eot) = t.encode("A  RED Circle", 8);
        let id = |s: &str| json["model"]["vocab"][s].as_i64().unwrap();
        assert_eq!(ids[0], id("<|startoftext|>"));
        assert_eq!(ids[1], id("a</w>"));
        assert_eq!(ids[2], id("red</w>"));
        assert_eq!(ids[3], id("circle</w>"));
        assert_eq!((eot, ids[eot]), (4, id("<|endoftext|>")));
        assert_eq!(t.decode(&ids), "a red circle");
        // Unreadable and unsupported files are errors naming the file.
        let bad = write(dir.path(), "bad.json", "{\"model\": ");
        assert!(Tokenizer::from_hf_json(&bad)
            .unwrap_err()
            .to_string()
            .contains("bad.json"));
        let wp = write(
            dir.path(),
            "wp.json",
            "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}",
        );
        let err = Tokenizer::from_hf_json(&wp).unwrap_err().to_string();
        assert!(
            err.contains("wp.json") && err.contains("WordPiece"),
            "{err}"
        );
        let missing = write(
            dir.path(),
            "missing.json",
            "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"c\": 2}, \"merges\": [\"a b\"]}}",
        );
        let err = Tokenizer::from_hf_json(&missing).unwrap_err().to_string();
        assert!(err.contains("missing.json") && err.contains("ab"), "{err}");
        assert!(Tokenizer::from_hf_json(&dir.path().join("absent.json")).is_err());
    }

    #[test]
    fn hf_gpt2_style() {
        let dir = tempfile::tempdir().unwrap();
        let b2u = bytes_to_unicode();
        let mut vocab = serde_json::Map::new();
        for (i, c) in b2u.iter().enumerate() {
            vocab.insert(c.to_string(), i.into());
        }
        let sp = b2u[b' ' as usize];
        let extra = [
            format!("{sp}r"),
            format!("{sp}re"),
            format!("{sp}red"),
            "filler".into(),
            "<|endoftext|>".into(),
        ];
        for (i, t) in extra.iter().enumerate() {
            vocab.insert(t.clone(), (256 + i).into());
        }
        let json = serde_json::json!({
            "added_tokens": [{"id": 260, "content": "<|endoftext|>"}],
            "normalizer": null,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "vocab": vocab, "merges": [format!("{sp} r"), format!("{sp}r e"), format!("{sp}re d")]}
        });
        let path = write(dir.path(), "gpt2.json", &json.to_string());
        let t = Tokenizer::from_hf_json(&path).unwrap();
        assert_eq!(t.vocab_size(), 261);
        let (ids, eot) = t.encode("big red", 10);
        assert_eq!(ids[0], 259, "no <|startoftext|>: SOT is vocab - 2");
        assert_eq!(&ids[1..eot], &[b'b' as i64, b'i' as i64, b'g' as i64, 258]);
        assert_eq!(ids[eot], 260);
        assert_eq!(t.decode(&ids), "big red");
        assert_eq!(t.decode(&t.encode("big, fat!", 20).0), "big, fat!");
    }

    #[test]
    fn gpt2_words_concatenate_back() {
        for s in ["a b", "  x y  ", "it's 2024, ok?\n\nyes", "tab\tsep", ""] {
            assert_eq!(split_words(s, Words::Gpt2).concat(), s);
        }
        assert_eq!(
            split_words("a red  cat", Words::Gpt2),
            ["a", " red", " ", " cat"]
        );
        assert_eq!(
            split_words("it's 42 x!", Words::Clip),
            ["it", "'s", "4", "2", "x", "!"]
        );
    }
}
