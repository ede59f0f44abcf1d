//! The state row, the one place on the Rust side that knows its layout, as
//! `connector.state.codec` writes it (`encode_row`): `{"v":[version],"r":{values}}`, then
//! `"d":1` for a delete, `"m":[..]` for missing fields, `"fv":{..}` for fields filled from an
//! older change and `"df":[..]` for a delete floor, each only when set, and last `"mv":"<hex>"`,
//! the mapping version of its values (docs/decisions/0023). Unescaped, `"d":`, `"m":`, `"fv":`,
//! `"df":` and `"mv":` can only be the row's own keys (inside a value a quote is
//! escaped), the argument `connector.state.codec.is_complete` makes.
//!
//! The ingest writes rows (`encode`) and peeks at a stored row's head (`plain_version`); the
//! snapshot's cut reader asks whether a row is complete or deleted, compares stored versions
//! (`version`) and reads the values (`values`).

use std::borrow::Cow;
use std::io::{self, ErrorKind};
use std::sync::LazyLock;

use memchr::memmem::{Finder, FinderRev};

use crate::connect::Kinds;
use crate::convert::{source_typed, Out};
use crate::json::{self, Scalar, J};

/// How every row starts: its version comes first.
const HEAD: &[u8] = b"{\"v\":[";
/// The values object's key.
const VALUES: &str = "r";

static DELETED: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"d\":"));
static MISSING: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"m\":"));
static FIELD_VERSIONS: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"fv\":"));
static DELETE_FLOOR: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"df\":"));
static MAPPING_VERSION: LazyLock<FinderRev<'static>> = LazyLock::new(|| FinderRev::new(b"\"mv\":\""));
static SOURCE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b",\"src\":\""));

/// A JSON string as orjson writes it: `"` and `\` escaped, control characters as the short
/// escapes or `\u00xx`, everything else (DEL, non-ASCII, U+2028) as is.
pub fn push_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[from..i]);
        if escape.is_empty() {
            out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
        } else {
            out.extend_from_slice(escape);
        }
        from = i + 1;
    }
    out.extend_from_slice(&bytes[from..]);
    out.push(b'"');
}

fn push_out(out: &mut Vec<u8>, value: &Out) {
    match value {
        Out::Str(s) => push_json_str(out, s),
        Out::Borrowed(s) => push_json_str(out, s),
        Out::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
        Out::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Out::Json(text) => out.extend_from_slice(text.as_bytes()),
    }
}

/// A plain JSON integer as `orjson.loads` reads it and `orjson.dumps` writes it back: no
/// sign on zero, no leading zero, no fraction or exponent, within 64 bits.
fn plain_int(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && text != "-0";
    canonical && (text.parse::<i64>().is_ok() || text.parse::<u64>().is_ok())
}

/// `value` as `orjson.dumps(orjson.loads(<its text>))` writes it, or `None` where the two
/// could differ (a float, whose text orjson rewrites; an object with a repeated key).
fn push_plain_json(out: &mut Vec<u8>, value: &J) -> Option<()> {
    match value {
        J::Null => out.extend_from_slice(b"null"),
        J::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        J::Num(text) => {
            if !plain_int(text) {
                return None;
            }
            out.extend_from_slice(text.as_bytes());
        }
        J::Str(s) => push_json_str(out, s),
        J::Arr(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_plain_json(out, item)?;
            }
            out.push(b']');
        }
        J::Obj(pairs) => {
            if !json::unique_keys(pairs) {
                return None;
            }
            out.push(b'{');
            for (i, (name, item)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_json_str(out, name);
                out.push(b':');
                push_plain_json(out, item)?;
            }
            out.push(b'}');
        }
    }
    Some(())
}

/// The text of a row's `"src"`, as `connector.mapping.source_columns.encode_source` writes
/// it: `{"t":<table>,"c":<row>}`, each logical column of `kinds` (a schema-wrapped message) as
/// the Python decoder types it, tagged (`convert::source_typed`); `None` where the bytes could
/// differ (the Python path writes the row then).
pub fn source_text(table: &str, row: &J, kinds: Option<&Kinds>) -> Option<String> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"t\":");
    push_json_str(&mut out, table);
    out.extend_from_slice(b",\"c\":");
    match (row, kinds) {
        (J::Obj(pairs), Some(kinds)) if !kinds.is_empty() => {
            if !json::unique_keys(pairs) {
                return None;
            }
            out.push(b'{');
            for (i, (name, value)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_json_str(&mut out, name);
                out.push(b':');
                match kinds.get(name.as_ref()) {
                    Some(kind) if !value.is_null() => {
                        let (tag, text) = source_typed(*kind, value).ok()?;
                        out.push(b'{');
                        push_json_str(&mut out, tag);
                        out.push(b':');
                        push_json_str(&mut out, &text);
                        out.push(b'}');
                    }
                    _ => push_plain_json(&mut out, value)?,
                }
            }
            out.push(b'}');
        }
        _ => push_plain_json(&mut out, row)?,
    }
    out.push(b'}');
    String::from_utf8(out).ok()
}

/// The state row of a complete upsert with no delete floor, byte for byte as ``encode_row``
/// writes it: ``{"v":[...],"r":{"EntityId":...,<fields in plan order>},"src":"...","mv":"<version>"}``.
/// Each value comes with its field's lead-in, `,"<name>":` (`plan::Field::lead`); the source
/// columns (`source_text`) are written as a JSON string, left out when not kept; the mapping
/// version is hex (no escape needed) and left out when there is none.
pub fn encode<'a>(
    version: &[i128; 5],
    entity_id: &str,
    values: impl Iterator<Item = (&'a str, &'a Out<'a>)>,
    source: Option<&str>,
    mapping_version: Option<&str>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(HEAD);
    for (i, part) in version.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(part.to_string().as_bytes());
    }
    out.extend_from_slice(b"],\"r\":{\"EntityId\":");
    push_json_str(&mut out, entity_id);
    for (lead, value) in values {
        out.extend_from_slice(lead.as_bytes());
        push_out(&mut out, value);
    }
    out.push(b'}');
    if let Some(src) = source {
        out.extend_from_slice(b",\"src\":");
        push_json_str(&mut out, src);
    }
    if let Some(mv) = mapping_version {
        out.extend_from_slice(b",\"mv\":");
        push_json_str(&mut out, mv);
    }
    out.push(b'}');
    out
}

/// The row without its source columns (`,"src":"..."`), which the snapshot never reads: the
/// cut's spill keeps rows of their old size (docs/decisions/0025). Unescaped, `,"src":"` can
/// only be the row's own key (no entity field is named `src`), and the string ends at the
/// first quote not escaped; a row without it (or cut short) is returned as it is.
pub fn without_source(row: &[u8]) -> Cow<'_, [u8]> {
    let Some(at) = SOURCE.find(row) else {
        return Cow::Borrowed(row);
    };
    let mut i = at + 8;
    while i < row.len() {
        match row[i] {
            b'\\' => i += 2,
            b'"' => {
                let mut out = Vec::with_capacity(row.len() - (i + 1 - at));
                out.extend_from_slice(&row[..at]);
                out.extend_from_slice(&row[i + 1..]);
                return Cow::Owned(out);
            }
            _ => i += 1,
        }
    }
    Cow::Borrowed(row)
}

/// The row's mapping version (``codec.row_mapping_version``): the text after the last
/// unescaped `"mv":"` up to the next quote; `None` for a row written before rows carried one.
pub fn mapping_version(row: &[u8]) -> Option<&[u8]> {
    let at = MAPPING_VERSION.rfind(row)? + 6;
    let len = row[at..].iter().position(|&b| b == b'"')?;
    Some(&row[at..at + len])
}

/// `connector.state.codec.is_complete`: no delete flag and no missing fields, unparsed.
pub fn is_complete(row: &[u8]) -> bool {
    DELETED.find(row).is_none() && MISSING.find(row).is_none()
}

/// Whether the row is a delete (its `"d"` key), unparsed.
pub fn is_deleted(row: &[u8]) -> bool {
    DELETED.find(row).is_some()
}

/// The version of a stored row that is a live, complete entity with no older-filled fields
/// and no delete floor, read from the head `encode` writes; `None` for any other row (the
/// caller parses it).
pub fn plain_version(raw: &[u8]) -> Option<[i128; 5]> {
    if !is_complete(raw) || FIELD_VERSIONS.find(raw).is_some() || DELETE_FLOOR.find(raw).is_some() {
        return None;
    }
    head_version(raw)
}

/// Any stored row's version, read from the head `encode` writes without parsing the rest;
/// `None` for a row that does not start with it.
pub fn head_version(raw: &[u8]) -> Option<[i128; 5]> {
    let rest = raw.strip_prefix(HEAD)?;
    let end = rest.iter().position(|&b| b == b']')?;
    let text = std::str::from_utf8(&rest[..end]).ok()?;
    let mut version = [0i128; 5];
    let mut parts = text.split(',');
    for slot in &mut version {
        *slot = parts.next()?.parse::<i128>().ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(version)
}

/// A stored row's version as the list Python compares (`orjson.loads(row)["v"]`).
pub fn version(row: &[u8]) -> io::Result<Vec<i128>> {
    let bad = || io::Error::new(ErrorKind::InvalidData, "a state row without a readable version");
    let doc = json::parse(row).ok_or_else(bad)?;
    let Some(J::Arr(parts)) = doc.get("v") else {
        return Err(bad());
    };
    parts
        .iter()
        .map(|p| match p {
            J::Num(text) => text.parse::<i128>().map_err(|_| bad()),
            _ => Err(bad()),
        })
        .collect()
}

/// The pairs of a stored row's values object (``orjson.loads(row)["r"]``), in document order,
/// the whole row checked (`json::scalar_member`); `None` when it is not valid, has no object
/// `r`, or a value in it is not a scalar.
pub fn values(row: &[u8]) -> Option<Vec<(Cow<'_, str>, Scalar<'_>)>> {
    json::scalar_member(row, VALUES)
}
