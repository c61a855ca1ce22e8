//! The fast parser: grammar/pex.pest compiled by compiler/build.rs into recursive descent
//! over bytes, writing the parse tree in preorder as it goes. It only says whether the text
//! matches; when it does not, pest parses the text again for the error in words.
//!
//! These are the primitives the generated rules call. Invariant: a primitive that fails
//! leaves the position where it was.

use super::parse::{Node, Rule};

pub(super) struct Fast<'t> {
    src: &'t str,
    text: &'t [u8],
    pos: usize,
    pub(super) nodes: Vec<Node>,
}

/// The parse tree of `text` as `rule`, or `None` when it does not match (including when
/// `rule` matches only a prefix: rules that should take the whole text end in `EOI`).
pub(super) fn parse(rule: Rule, text: &str) -> Option<Vec<Node>> {
    // Experiments make about one node for every 2.5 bytes: reserving one for every two
    // saves growing (and copying) the tree, and pages never written cost nothing.
    let mut p = Fast {
        src: text,
        text: text.as_bytes(),
        pos: 0,
        nodes: Vec::with_capacity(text.len() / 2 + 16),
    };
    p.run(rule).then_some(p.nodes)
}

impl Fast<'_> {
    /// Opens a node at the position; `close` finishes it.
    #[inline(always)]
    fn open(&mut self, rule: Rule) -> usize {
        let at = self.nodes.len();
        let pos = self.pos as u32;
        self.nodes.push(Node {
            rule,
            start: pos,
            end: pos,
            next: 0,
        });
        at
    }

    #[inline(always)]
    fn close(&mut self, at: usize) {
        let next = self.nodes.len() as u32;
        let node = &mut self.nodes[at];
        node.end = self.pos as u32;
        node.next = next;
    }

    #[inline(always)]
    fn byte(&mut self, b: u8) -> bool {
        if self.text.get(self.pos) == Some(&b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    #[inline(always)]
    fn lit(&mut self, s: &[u8]) -> bool {
        if self.text[self.pos..].starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    #[inline(always)]
    fn lit_insensitive(&mut self, s: &[u8]) -> bool {
        match self.text.get(self.pos..self.pos + s.len()) {
            Some(t) if t.eq_ignore_ascii_case(s) => {
                self.pos += s.len();
                true
            }
            _ => false,
        }
    }

    /// One ASCII byte in `lo..=hi`.
    #[inline(always)]
    fn range(&mut self, lo: u8, hi: u8) -> bool {
        match self.text.get(self.pos) {
            Some(&b) if (lo..=hi).contains(&b) => {
                self.pos += 1;
                true
            }
            _ => false,
        }
    }

    #[inline(always)]
    fn class(&mut self, f: fn(&u8) -> bool) -> bool {
        match self.text.get(self.pos) {
            Some(b) if f(b) => {
                self.pos += 1;
                true
            }
            _ => false,
        }
    }

    /// The character at the position, if any (the position is always on a character
    /// boundary: every primitive advances by whole characters).
    fn char_here(&self) -> Option<char> {
        self.src.get(self.pos..).and_then(|s| s.chars().next())
    }

    #[allow(dead_code)] // used by ranges over non-ASCII characters
    fn range_char(&mut self, lo: char, hi: char) -> bool {
        match self.char_here() {
            Some(c) if (lo..=hi).contains(&c) => {
                self.pos += c.len_utf8();
                true
            }
            _ => false,
        }
    }

    /// Any one character.
    #[inline(always)]
    fn any(&mut self) -> bool {
        match self.text.get(self.pos) {
            None => false,
            Some(&b) => {
                // The length of a UTF-8 sequence from its first byte.
                self.pos += match b {
                    0x00..=0x7f => 1,
                    0xc0..=0xdf => 2,
                    0xe0..=0xef => 3,
                    _ => 4,
                };
                true
            }
        }
    }

    /// Advances to the first place where one of `strings` starts, or to the end (pest's
    /// optimiser turns some repetitions into this; none of the current grammar's).
    #[allow(dead_code)]
    #[inline(always)]
    fn skip_until(&mut self, strings: &[&[u8]]) -> bool {
        let rest = &self.text[self.pos..];
        let found = match strings {
            [one] if one.len() == 1 => rest.iter().position(|&b| b == one[0]),
            _ => (0..rest.len()).find(|&i| strings.iter().any(|s| rest[i..].starts_with(s))),
        };
        self.pos += found.unwrap_or(rest.len());
        true
    }

    /// `EOI`, which pest reports as a node of its own.
    fn eoi_t(&mut self) -> bool {
        if self.pos == self.text.len() {
            let at = self.open(Rule::EOI);
            self.close(at);
            true
        } else {
            false
        }
    }
}

#[allow(
    clippy::all,
    unused_braces,
    unused_parens,
    dead_code,
    clippy::pedantic,
    clippy::nursery
)]
mod generated {
    use super::*;
    include!(concat!(env!("OUT_DIR"), "/fast.rs"));
}
