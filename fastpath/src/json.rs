//! A strict JSON reader into a borrowed tree, for the fast path only.
//!
//! Why not serde_json's `Value`: it allocates every string and hashes every object key, and
//! cost 5.7 µs per ~1 KB event here against 2.6 µs for orjson building Python objects
//! (docs/decisions/0012). This tree borrows unescaped strings from the input, keeps objects as
//! pairs in document order (lookups scan from the end, so a duplicate key reads its last
//! value, as orjson's dict does), and keeps each number as its literal text, so ints and
//! floats are told apart exactly as orjson tells them.
//!
//! It must never accept what orjson refuses (the caller would map a message the Python path
//! dead-letters); refusing more is only a lost shortcut. So it follows RFC 8259 to the
//! letter: no trailing commas, no comments, no NaN, no leading zeros, no control characters
//! in strings, no lone surrogates, UTF-8 checked up front.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

pub enum J<'a> {
    Null,
    Bool(bool),
    /// The number's literal text, validated.
    Num(&'a str),
    Str(Cow<'a, str>),
    Arr(Vec<J<'a>>),
    Obj(Vec<(Cow<'a, str>, J<'a>)>),
}

impl<'a> J<'a> {
    pub fn get(&self, name: &str) -> Option<&J<'a>> {
        match self {
            J::Obj(pairs) => pairs.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn pairs(&self) -> Option<&[(Cow<'a, str>, J<'a>)]> {
        match self {
            J::Obj(pairs) => Some(pairs),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            J::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, J::Null)
    }
}

/// Structural equality as Python compares the parsed values, or `false` where unsure (numbers
/// compare by literal: `1` and `1.0` are equal in Python but not here, which only declines).
pub fn same(a: &J, b: &J) -> bool {
    match (a, b) {
        (J::Null, J::Null) => true,
        (J::Bool(x), J::Bool(y)) => x == y,
        (J::Num(x), J::Num(y)) => x == y,
        (J::Str(x), J::Str(y)) => x == y,
        (J::Arr(x), J::Arr(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q)),
        (J::Obj(x), J::Obj(y)) => {
            // Only objects without duplicate keys, compared as sets of pairs.
            if x.len() != y.len() || !unique_keys(x) || !unique_keys(y) {
                return false;
            }
            if y.len() <= PAIRWISE_KEYS {
                return x.iter().all(|(k, v)| b.get(k).is_some_and(|w| same(v, w)));
            }
            let by_key: HashMap<&str, &J> = y.iter().map(|(k, w)| (k.as_ref(), w)).collect();
            x.iter()
                .all(|(k, v)| by_key.get(k.as_ref()).is_some_and(|w| same(v, w)))
        }
        _ => false,
    }
}

/// Objects up to this many keys are checked pairwise (no allocation); larger ones by hashing,
/// so a crafted object of 100,000 keys costs milliseconds, not minutes (issue 16).
const PAIRWISE_KEYS: usize = 16;

pub fn unique_keys(pairs: &[(Cow<str>, J)]) -> bool {
    if pairs.len() <= PAIRWISE_KEYS {
        return pairs
            .iter()
            .enumerate()
            .all(|(i, (k, _))| pairs[..i].iter().all(|(other, _)| other != k));
    }
    let mut seen = HashSet::with_capacity(pairs.len());
    pairs.iter().all(|(k, _)| seen.insert(k.as_ref()))
}

const MAX_DEPTH: usize = 64;

pub fn parse(input: &[u8]) -> Option<J<'_>> {
    let text = std::str::from_utf8(input).ok()?;
    let mut p = Parser {
        s: text,
        b: input,
        i: 0,
    };
    p.ws();
    let value = p.value(0)?;
    p.ws();
    (p.i == p.b.len()).then_some(value)
}

/// One scalar of a state row's values, borrowed from the input where it has no escape.
pub enum Scalar<'a> {
    Null,
    Bool(bool),
    /// The number's literal text, validated.
    Num(&'a str),
    Str(Cow<'a, str>),
}

/// The pairs of the object under `member` in a document of one object (a stored state row's
/// values, `row::values`), in document order, with the whole document checked as strictly as
/// ``parse`` checks it; ``None`` when it is not valid, has no object `member`, or a value in
/// it is not a scalar (the caller declines).
///
/// ``parse`` builds a tree for every value and cost about 1 µs per 350-byte row here, most of
/// it moving enums around; the snapshot reads every row once or twice, so its values object
/// is read flat instead, and the rest of the document is only checked.
pub fn scalar_member<'a>(input: &'a [u8], member: &str) -> Option<Vec<(Cow<'a, str>, Scalar<'a>)>> {
    let text = std::str::from_utf8(input).ok()?;
    let mut p = Parser {
        s: text,
        b: input,
        i: 0,
    };
    let mut values = None;
    p.ws();
    p.members(|p, key| {
        if key == member {
            values = Some(p.scalars()?); // a later "r" replaces it, as in a dict
            Some(())
        } else {
            p.skip(1)
        }
    })?;
    p.ws();
    (p.i == p.b.len()).then_some(())?;
    values
}

struct Parser<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn eat(&mut self, lit: &[u8]) -> Option<()> {
        if self.b[self.i..].starts_with(lit) {
            self.i += lit.len();
            Some(())
        } else {
            None
        }
    }

    /// Read an object's pairs (from its ``{``), calling ``each`` with every key while the
    /// parser stands at that key's value, which ``each`` must read.
    fn members(&mut self, mut each: impl FnMut(&mut Self, Cow<'a, str>) -> Option<()>) -> Option<()> {
        self.eat(b"{")?;
        self.ws();
        if self.b.get(self.i) == Some(&b'}') {
            self.i += 1;
            return Some(());
        }
        loop {
            self.ws();
            if self.b.get(self.i) != Some(&b'"') {
                return None;
            }
            let key = self.string()?;
            self.ws();
            self.eat(b":")?;
            self.ws();
            each(self, key)?;
            self.ws();
            match self.b.get(self.i)? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// An object of scalars, as pairs; ``None`` for anything else.
    fn scalars(&mut self) -> Option<Vec<(Cow<'a, str>, Scalar<'a>)>> {
        let mut pairs = Vec::with_capacity(16);
        self.members(|p, key| {
            let value = match *p.b.get(p.i)? {
                b'"' => Scalar::Str(p.string()?),
                b't' => p.eat(b"true").map(|_| Scalar::Bool(true))?,
                b'f' => p.eat(b"false").map(|_| Scalar::Bool(false))?,
                b'n' => p.eat(b"null").map(|_| Scalar::Null)?,
                b'-' | b'0'..=b'9' => Scalar::Num(p.number_text()?),
                _ => return None,
            };
            pairs.push((key, value));
            Some(())
        })?;
        Some(pairs)
    }

    fn value(&mut self, depth: usize) -> Option<J<'a>> {
        if depth > MAX_DEPTH {
            return None;
        }
        match *self.b.get(self.i)? {
            b'{' => self.object(depth),
            b'[' => self.array(depth),
            b'"' => self.string().map(J::Str),
            b't' => self.eat(b"true").map(|_| J::Bool(true)),
            b'f' => self.eat(b"false").map(|_| J::Bool(false)),
            b'n' => self.eat(b"null").map(|_| J::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn object(&mut self, depth: usize) -> Option<J<'a>> {
        let mut pairs = Vec::new();
        self.members(|p, key| {
            pairs.push((key, p.value(depth + 1)?));
            Some(())
        })?;
        Some(J::Obj(pairs))
    }

    /// Check one value exactly as ``value`` does, building nothing.
    fn skip(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match *self.b.get(self.i)? {
            b'{' => return self.members(|p, _| p.skip(depth + 1)),
            b'[' => {}
            b'"' => return self.string().map(drop),
            b't' => return self.eat(b"true"),
            b'f' => return self.eat(b"false"),
            b'n' => return self.eat(b"null"),
            b'-' | b'0'..=b'9' => return self.number_text().map(drop),
            _ => return None,
        }
        self.i += 1;
        self.ws();
        if self.b.get(self.i) == Some(&b']') {
            self.i += 1;
            return Some(());
        }
        loop {
            self.ws();
            self.skip(depth + 1)?;
            self.ws();
            match *self.b.get(self.i)? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    fn array(&mut self, depth: usize) -> Option<J<'a>> {
        self.i += 1;
        let mut items = Vec::new();
        self.ws();
        if self.b.get(self.i) == Some(&b']') {
            self.i += 1;
            return Some(J::Arr(items));
        }
        loop {
            self.ws();
            items.push(self.value(depth + 1)?);
            self.ws();
            match self.b.get(self.i)? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(J::Arr(items));
                }
                _ => return None,
            }
        }
    }

    fn number(&mut self) -> Option<J<'a>> {
        self.number_text().map(J::Num)
    }

    fn number_text(&mut self) -> Option<&'a str> {
        let start = self.i;
        if self.b[self.i] == b'-' {
            self.i += 1;
        }
        match *self.b.get(self.i)? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            if !self.b.get(self.i)?.is_ascii_digit() {
                return None;
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            if !self.b.get(self.i)?.is_ascii_digit() {
                return None;
            }
            self.digits();
        }
        let text = &self.s[start..self.i];
        // orjson refuses a document with a number beyond the double range (1e400), even one
        // nothing reads: so must this. An integer literal within 19 characters always fits.
        if (text.len() > 19 || text.contains(['.', 'e', 'E'])) && !text.parse::<f64>().ok()?.is_finite() {
            return None;
        }
        Some(text)
    }

    fn digits(&mut self) {
        while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.s.get(self.i..self.i + 4)?;
        if !digits.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        self.i += 4;
        u32::from_str_radix(digits, 16).ok()
    }

    /// Inlined, so the common borrowed string stays in registers: returned through memory it
    /// cost a store-forwarding stall per string, a third of a row's parse.
    #[inline(always)]
    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.i += 1;
        let start = self.i;
        // The common string has no escape: find its end in one pass and borrow it.
        let end = start
            + self.b[start..]
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
        self.i = end;
        match self.b[end] {
            b'"' => {
                self.i += 1;
                Some(Cow::Borrowed(&self.s[start..end]))
            }
            b'\\' => self.escaped(start).map(Cow::Owned),
            _ => None, // a control character
        }
    }

    /// The rest of a string with an escape (``self.i`` at the first backslash).
    #[cold]
    fn escaped(&mut self, start: usize) -> Option<String> {
        let mut out = String::from(&self.s[start..self.i]);
        loop {
            match *self.b.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    return Some(out);
                }
                b'\\' => {
                    self.i += 1;
                    let c = *self.b.get(self.i)?;
                    self.i += 1;
                    match c {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let first = self.hex4()?;
                            let code = match first {
                                0xD800..=0xDBFF => {
                                    self.eat(b"\\u")?;
                                    let second = self.hex4()?;
                                    if !(0xDC00..=0xDFFF).contains(&second) {
                                        return None; // a lone high surrogate
                                    }
                                    0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                                }
                                0xDC00..=0xDFFF => return None, // a lone low surrogate
                                other => other,
                            };
                            out.push(char::from_u32(code)?);
                        }
                        _ => return None,
                    }
                }
                c if c < 0x20 => return None,
                _ => {
                    // Copy up to the next quote, backslash or control character at once.
                    let from = self.i;
                    while self
                        .b
                        .get(self.i)
                        .is_some_and(|&c| c != b'"' && c != b'\\' && c >= 0x20)
                    {
                        self.i += 1;
                    }
                    out.push_str(&self.s[from..self.i]);
                }
            }
        }
    }
}
