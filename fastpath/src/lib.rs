//! The compiled fast path of the ingest's decode-and-map step, for Debezium JSON messages,
//! with or without their embedded schema (docs/decisions/0012; the schema: `connect`).
//!
//! The Python path (`connector.source.debezium` + `connector.mapping.mapper`) is the
//! reference. This path handles the common, valid message exactly as it does and *declines*
//! everything else — an unchanged-TOAST placeholder anywhere in the bytes, any value a
//! converter would refuse, any shape or logical type it does not know — by returning
//! `None`; the caller then runs the Python path, which maps the message or names its problem
//! (dead letter). So this code never decides that input is bad, and never needs to phrase an
//! error: a decline costs one wasted parse, a wrong answer would corrupt state. The
//! equivalence tests (tests/unit/mapping/test_fastpath.py) hold the two paths to the same bytes.
//!
//! An upsert comes out as its state key and its state row, byte for byte as
//! `connector.state.codec` writes them (`state_key`, `encode_row`) for a row with no stored
//! predecessor; `peek` reads the head of a stored row, so the common update (a newer complete
//! version over a plain stored row) needs no Python work on the values at all.

mod connect;
mod csv;
mod cut;
mod digest;
mod json;
mod snapshot;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use connect::{Kinds, Logical, SchemaCache};
use json::J;
use memchr::memmem;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};
use serde::Deserialize;

/// The message is not one this path maps; the Python path takes it.
struct Decline;

type R<T> = Result<T, Decline>;

// 1800-01-01 and 2200-12-31 as days since the epoch: the span the converters accept.
const FIRST_DAY: i64 = -62_091;
const LAST_DAY: i64 = 84_370;
const DAY_MICROS: i128 = 86_400_000_000;

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Conv {
    String,
    Boolean,
    Integer {
        lo: i64,
        hi: i64,
    },
    Enum {
        symbols: HashSet<String>,
    },
    /// Debezium's precise mode at the schema's own scale (at most 6): base64 of the unscaled
    /// integer.
    Decimal {
        scale: u32,
        precision: u32,
    },
    /// Days since the epoch.
    Date,
    Timestamp {
        divisor: i64,
        millis: bool,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Seg {
    Lit(String),
    Col(String),
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Source {
    /// The constant's stored form as JSON text (made by the plan builder with orjson).
    Const { json: String },
    Column {
        column: String,
        path: Vec<String>,
        conv: Conv,
        enum_map: Option<HashMap<String, String>>,
    },
    Template {
        segments: Vec<Seg>,
        columns: Vec<String>,
    },
}

#[derive(Deserialize)]
struct Field {
    name: String,
    source: Source,
    /// What a null or absent source gives, as JSON text (the default, converted, or `null`
    /// for a nullable field); absent: the Python path decides (an error, or a default that
    /// fails).
    on_null: Option<String>,
    /// `,"<name>":`, the field's lead-in in the encoded row.
    #[serde(skip)]
    lead: String,
}

#[derive(Deserialize)]
struct Table {
    entity: String,
    entity_id: Vec<Seg>,
    fields: Vec<Field>,
}

#[derive(Deserialize)]
struct Plan {
    tables: HashMap<String, Table>,
}

/// One output value; `Json` is a constant or a null value's JSON text from the plan.
enum Out<'a> {
    Str(String),
    Borrowed(&'a str),
    Int(i128),
    Bool(bool),
    Json(&'a str),
}

impl Out<'_> {
    /// The same value, owning its text (for a value converted from a temporary).
    fn into_owned<'b>(self) -> R<Out<'b>> {
        Ok(match self {
            Out::Str(s) => Out::Str(s),
            Out::Borrowed(s) => Out::Str(s.to_owned()),
            Out::Int(i) => Out::Int(i),
            Out::Bool(b) => Out::Bool(b),
            Out::Json(_) => return Err(Decline),
        })
    }
}

struct Mapped<'a> {
    table: &'a Table,
    entity_id: String,
    deleted: bool,
    version: [i128; 5],
    values: Vec<(&'a Field, Out<'a>)>,
}

/// A JSON number as orjson reads it: an integer literal within 64 bits is an int, anything
/// else a float (which no converter here takes).
enum Num {
    Int(i128),
    Float,
}

fn number(text: &str) -> R<Num> {
    if !text.contains(['.', 'e', 'E']) {
        if let Ok(v) = text.parse::<i128>() {
            if v >= i64::MIN as i128 && v <= u64::MAX as i128 {
                return Ok(Num::Int(v));
            }
        }
    }
    let f: f64 = text.parse().map_err(|_| Decline)?;
    if !f.is_finite() {
        return Err(Decline); // orjson refuses it: the Python path names the problem
    }
    Ok(Num::Float)
}

fn int_of(v: &J) -> R<i128> {
    match v {
        J::Num(text) => match number(text)? {
            Num::Int(i) => Ok(i),
            Num::Float => Err(Decline),
        },
        _ => Err(Decline),
    }
}

fn nonempty_str<'a>(v: Option<&'a J>) -> R<&'a str> {
    match v {
        Some(J::Str(s)) if !s.is_empty() => Ok(s),
        _ => Err(Decline),
    }
}

/// ``<schema or db>.<table>`` from the source block, both non-empty text.
fn table_name(source: &J, first: &str) -> R<String> {
    Ok(format!(
        "{}.{}",
        nonempty_str(source.get(first))?,
        nonempty_str(source.get("table"))?
    ))
}

/// An object without duplicate keys (a duplicate makes Python's dict differ from the pairs).
fn object<'a, 'b>(v: &'b J<'a>) -> R<&'b [(Cow<'a, str>, J<'a>)]> {
    match v.pairs() {
        Some(pairs) if json::unique_keys(pairs) => Ok(pairs),
        _ => Err(Decline),
    }
}

fn is_wrapped(doc: &J) -> bool {
    doc.pairs().is_some_and(|p| p.len() == 2) && doc.get("schema").is_some() && doc.get("payload").is_some()
}

fn absent(v: Option<&J>) -> bool {
    v.is_none_or(J::is_null)
}

/// An LSN: decimal text of a u64 in ASCII digits, a JSON integer, or null (0).
fn lsn(v: &J) -> R<i128> {
    match v {
        J::Null => Ok(0),
        J::Str(s) if !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse::<u64>().map(i128::from).map_err(|_| Decline) // beyond a u64: Python refuses it
        }
        J::Num(_) => int_of(v),
        _ => Err(Decline),
    }
}

fn postgres_version(source: &J, phase: i128) -> R<[i128; 4]> {
    let seq = source.get("sequence");
    if absent(seq) {
        let lsn_value = source.get("lsn");
        if absent(lsn_value) {
            return Err(Decline);
        }
        return Ok([phase, lsn(lsn_value.unwrap())?, 0, 0]);
    }
    let parsed;
    let pair = match seq.unwrap() {
        J::Str(text) => {
            parsed = json::parse(text.as_bytes()).ok_or(Decline)?;
            &parsed
        }
        other => other,
    };
    match pair {
        J::Arr(items) if items.len() == 2 => Ok([phase, lsn(&items[0])?, lsn(&items[1])?, 0]),
        _ => Err(Decline),
    }
}

fn mysql_version(source: &J, phase: i128) -> R<[i128; 4]> {
    let file = source.get("file").and_then(J::as_str).ok_or(Decline)?;
    let pos = int_of(source.get("pos").ok_or(Decline)?)?;
    let dot = file.rfind('.').ok_or(Decline)?;
    let digits = &file[dot + 1..];
    if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Decline);
    }
    let row = match source.get("row") {
        None | Some(J::Null) => 0,
        Some(v) => int_of(v)?,
    };
    Ok([phase, digits.parse().map_err(|_| Decline)?, pos, row])
}

fn check_transaction(doc: &J) -> R<()> {
    match doc.get("transaction") {
        None | Some(J::Null) => Ok(()),
        Some(t @ J::Obj(_)) => {
            t.get("id").and_then(J::as_str).ok_or(Decline)?;
            int_of(t.get("total_order").ok_or(Decline)?)?;
            int_of(t.get("data_collection_order").ok_or(Decline)?)?;
            Ok(())
        }
        Some(_) => Err(Decline),
    }
}

/// A primary-key part as text: an integer, or printable ASCII text (other text: Python decides).
fn id_part(out: &mut String, v: Option<&J>) -> R<()> {
    match v {
        Some(n @ J::Num(_)) => {
            out.push_str(&int_of(n)?.to_string());
            Ok(())
        }
        Some(J::Str(s)) if !s.is_empty() && s.bytes().all(|b| (0x20..0x7f).contains(&b)) => {
            out.push_str(s);
            Ok(())
        }
        _ => Err(Decline),
    }
}

/// A template's text, each column's value read by `get` and written as ``_id_part`` writes it.
fn render<'a>(segments: &[Seg], get: impl Fn(&str) -> Option<&'a J<'a>>) -> R<String> {
    let mut out = String::new();
    for seg in segments {
        match seg {
            Seg::Lit(text) => out.push_str(text),
            Seg::Col(column) => id_part(&mut out, get(column))?,
        }
    }
    Ok(out)
}

/// The EntityId template over the key (first) and the row, as ``_format_id`` formats it.
fn format_id<'a>(segments: &[Seg], key: &'a J<'a>, row: &'a J<'a>) -> R<String> {
    render(segments, |column| key.get(column).or_else(|| row.get(column)))
}

/// A template field (an association): None when a column is null or absent.
fn template<'a>(segments: &[Seg], columns: &[String], row: &'a J<'a>) -> R<Option<String>> {
    if columns.iter().any(|c| absent(row.get(c))) {
        return Ok(None);
    }
    render(segments, |column| row.get(column)).map(Some)
}

/// Walk a path into a JSON column (text parsed at each step, as ``_follow`` does) and convert
/// what it reaches; `None` for absent or null on the way.
fn follow(
    start: &J,
    path: &[String],
    conv: &Conv,
    enum_map: &Option<HashMap<String, String>>,
) -> R<Option<Out<'static>>> {
    let parsed;
    let current = match start {
        J::Str(text) => {
            parsed = json::parse(text.as_bytes()).ok_or(Decline)?;
            &parsed
        }
        other => other,
    };
    let Some((step, rest)) = path.split_first() else {
        return Ok(Some(converted(conv, enum_map, current)?.into_owned()?));
    };
    match current {
        J::Obj(_) => match current.get(step) {
            None | Some(J::Null) => Ok(None),
            Some(next) if rest.is_empty() => Ok(Some(converted(conv, enum_map, next)?.into_owned()?)),
            Some(next) => follow(next, rest, conv, enum_map),
        },
        _ => Ok(None),
    }
}

fn control(b: u8) -> bool {
    matches!(b, 0x00..=0x08 | 0x0b | 0x0c | 0x0e..=0x1f | 0x7f)
}

fn b64_value(c: u8) -> Option<u32> {
    match c {
        b'A'..=b'Z' => Some((c - b'A') as u32),
        b'a'..=b'z' => Some((c - b'a') as u32 + 26),
        b'0'..=b'9' => Some((c - b'0') as u32 + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// ``binascii.a2b_base64(strict_mode=True)`` for what it accepts; anything doubtful declines.
fn base64_strict(text: &str) -> R<Vec<u8>> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return Err(Decline);
    }
    let pads = bytes.iter().rev().take_while(|&&b| b == b'=').count();
    if pads > 2 {
        return Err(Decline);
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let data = &bytes[..bytes.len() - pads];
    for chunk in data.chunks(4) {
        let mut acc: u32 = 0;
        for &c in chunk {
            acc = (acc << 6) | b64_value(c).ok_or(Decline)?;
        }
        match chunk.len() {
            4 => out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]),
            3 => out.extend_from_slice(&[(acc >> 10) as u8, (acc >> 2) as u8]),
            2 => out.push((acc >> 4) as u8),
            _ => return Err(Decline),
        }
    }
    Ok(out)
}

/// ``str(Decimal(unscaled).scaleb(-scale))`` for a scale of at most 6 (the plan's limit),
/// where Python's to-scientific-string rule always gives plain notation.
fn decimal_text(unscaled: i128, scale: u32) -> String {
    let digits = unscaled.unsigned_abs().to_string();
    let scale = scale as usize;
    let mut out = String::with_capacity(digits.len() + scale + 3);
    if unscaled < 0 {
        out.push('-');
    }
    if scale == 0 {
        out.push_str(&digits);
    } else if digits.len() > scale {
        out.push_str(&digits[..digits.len() - scale]);
        out.push('.');
        out.push_str(&digits[digits.len() - scale..]);
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', scale - digits.len()));
        out.push_str(&digits);
    }
    out
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn date_text(days: i64) -> String {
    let (y, m, d) = civil(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// What orjson writes for a UTC ``datetime``: seconds always, microseconds when not zero.
fn timestamp_text(micros: i128) -> String {
    let days = micros.div_euclid(DAY_MICROS) as i64;
    let rest = micros.rem_euclid(DAY_MICROS);
    let (secs, frac) = ((rest / 1_000_000) as i64, (rest % 1_000_000) as i64);
    let (h, mi, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if frac == 0 {
        format!("{}T{h:02}:{mi:02}:{s:02}+00:00", date_text(days))
    } else {
        format!("{}T{h:02}:{mi:02}:{s:02}.{frac:06}+00:00", date_text(days))
    }
}

fn convert<'a>(conv: &Conv, v: &'a J) -> R<Out<'a>> {
    match conv {
        Conv::String => match v {
            J::Str(s) if !s.bytes().any(control) => Ok(Out::Borrowed(s)),
            J::Num(_) => Ok(Out::Str(int_of(v)?.to_string())),
            _ => Err(Decline),
        },
        Conv::Boolean => match v {
            J::Bool(b) => Ok(Out::Bool(*b)),
            J::Num(_) => match int_of(v)? {
                0 => Ok(Out::Bool(false)),
                1 => Ok(Out::Bool(true)),
                _ => Err(Decline),
            },
            _ => Err(Decline),
        },
        Conv::Integer { lo, hi } => {
            let i = int_of(v)?;
            if i < *lo as i128 || i > *hi as i128 {
                return Err(Decline);
            }
            Ok(Out::Int(i))
        }
        Conv::Enum { symbols } => match v {
            J::Str(s) if symbols.contains(s.as_ref()) => Ok(Out::Borrowed(s)),
            _ => Err(Decline),
        },
        Conv::Decimal { scale, precision } => {
            let J::Str(text) = v else { return Err(Decline) };
            let raw = base64_strict(text)?;
            if raw.len() > 16 {
                return Err(Decline);
            }
            let mut unscaled: i128 = if raw.first().is_some_and(|b| b & 0x80 != 0) {
                -1
            } else {
                0
            };
            for b in raw {
                unscaled = (unscaled << 8) | b as i128;
            }
            let limit = 10i128.checked_pow(*precision).ok_or(Decline)?;
            if unscaled <= -limit || unscaled >= limit {
                return Err(Decline);
            }
            Ok(Out::Str(decimal_text(unscaled, *scale)))
        }
        Conv::Date => {
            let days = int_of(v)?;
            if days < FIRST_DAY as i128 || days > LAST_DAY as i128 {
                return Err(Decline);
            }
            Ok(Out::Str(date_text(days as i64)))
        }
        Conv::Timestamp { divisor, millis } => {
            let mut micros = (int_of(v)? * 1_000_000).div_euclid(*divisor as i128);
            if micros < FIRST_DAY as i128 * DAY_MICROS || micros >= (LAST_DAY as i128 + 1) * DAY_MICROS {
                return Err(Decline);
            }
            if *millis {
                micros -= micros.rem_euclid(1000);
            }
            Ok(Out::Str(timestamp_text(micros)))
        }
    }
}

/// The converted value, with the enum table (``table.get(str(value), value)``) applied first.
fn converted<'a>(conv: &'a Conv, enum_map: &'a Option<HashMap<String, String>>, value: &'a J) -> R<Out<'a>> {
    if let Some(table) = enum_map {
        let key: Cow<str> = match value {
            J::Str(s) => Cow::Borrowed(s),
            J::Num(_) => Cow::Owned(int_of(value)?.to_string()),
            _ => return Err(Decline), // str() of a bool or float: Python's spelling
        };
        if let Some(mapped) = table.get(key.as_ref()) {
            return match conv {
                Conv::String if !mapped.bytes().any(control) => Ok(Out::Borrowed(mapped)),
                Conv::Enum { symbols } if symbols.contains(mapped) => Ok(Out::Borrowed(mapped)),
                _ => Err(Decline),
            };
        }
    }
    convert(conv, value)
}

/// A logical column (from the message's schema) read into a field: the converter on the wire
/// value where that gives what the Python path's typed value gives, else a decline.
fn logical_value<'a>(kind: Logical, conv: &Conv, raw: &'a J) -> R<Out<'a>> {
    match (kind, conv) {
        (Logical::Date, Conv::Date) => convert(conv, raw),
        (Logical::Timestamp { divisor }, Conv::Timestamp { millis, .. }) => convert(
            &Conv::Timestamp {
                divisor,
                millis: *millis,
            },
            raw,
        ),
        (
            Logical::Decimal { scale },
            Conv::Decimal {
                scale: field_scale, ..
            },
        ) if scale == *field_scale as i64 => convert(conv, raw),
        _ => Err(Decline),
    }
}

fn field_value<'a>(field: &'a Field, row: &'a J, kinds: Option<&Kinds>) -> R<Out<'a>> {
    let null = || field.on_null.as_deref().map(Out::Json).ok_or(Decline);
    let logical = |column: &str| kinds.and_then(|k| k.get(column)).copied();
    match &field.source {
        Source::Const { json } => Ok(Out::Json(json)),
        Source::Template { segments, columns } => {
            if columns.iter().any(|c| logical(c).is_some()) {
                return Err(Decline); // a typed value as an id part: the Python path decides
            }
            match template(segments, columns, row)? {
                Some(text) => Ok(Out::Str(text)),
                None => null(),
            }
        }
        Source::Column {
            column,
            path,
            conv,
            enum_map,
        } => {
            let raw = match row.get(column) {
                None | Some(J::Null) => return null(),
                Some(v) => v,
            };
            if let Some(kind) = logical(column) {
                if !path.is_empty() || enum_map.is_some() {
                    return Err(Decline);
                }
                return logical_value(kind, conv, raw);
            }
            if path.is_empty() {
                return converted(conv, enum_map, raw);
            }
            match follow(raw, path, conv, enum_map)? {
                None => null(),
                Some(out) => Ok(out),
            }
        }
    }
}

/// The logical columns of the message's schemas (both `None` without a schema).
struct Schemas<'a> {
    value: Option<&'a connect::ValueKinds>,
    key: Option<&'a Kinds>,
}

fn map_message<'a>(
    tables: &'a HashMap<String, Table>,
    doc: &'a J,
    key: &'a J,
    offset: i64,
    schemas: &Schemas,
) -> R<Mapped<'a>> {
    let doc_pairs = object(doc)?;
    let key_pairs = object(key)?;
    if is_wrapped(doc) || is_wrapped(key) || doc_pairs.is_empty() {
        return Err(Decline);
    }
    let (deleted, snapshot) = match doc.get("op").and_then(J::as_str) {
        Some("c" | "u") => (false, false),
        Some("r") => (false, true),
        Some("d") => (true, false),
        _ => return Err(Decline),
    };
    let source = doc.get("source").ok_or(Decline)?;
    object(source)?;
    let phase = if snapshot { 0 } else { 1 };
    let (table_name, version) = match source.get("connector").and_then(J::as_str) {
        Some("postgresql") => (table_name(source, "schema")?, postgres_version(source, phase)?),
        Some("mysql") => (table_name(source, "db")?, mysql_version(source, phase)?),
        _ => return Err(Decline),
    };
    let row = match doc.get(if deleted { "before" } else { "after" }) {
        None | Some(J::Null) if deleted => key,
        Some(row @ J::Obj(_)) => row,
        _ => return Err(Decline),
    };
    let kinds = schemas.value.map(|v| if deleted { &v.before } else { &v.after });
    let typed = |column: &str| {
        kinds.is_some_and(|k| k.contains_key(column)) || schemas.key.is_some_and(|k| k.contains_key(column))
    };
    for (column, key_value) in key_pairs {
        if typed(column) {
            return Err(Decline); // a typed key column: the Python path compares and formats it
        }
        if let Some(row_value) = row.get(column) {
            if !json::same(row_value, key_value) {
                return Err(Decline);
            }
        }
    }
    if let Some(kinds) = kinds {
        // The Python path converts every logical column of the row, used or not, and refuses
        // the message if one does not convert.
        for (column, kind) in kinds {
            match row.get(column) {
                None | Some(J::Null) => {}
                Some(value) if connect::converts(*kind, value, |v| int_of(v).ok()) => {}
                Some(_) => return Err(Decline),
            }
        }
    }
    check_transaction(doc)?;
    let table = tables.get(&table_name).ok_or(Decline)?;
    if table
        .entity_id
        .iter()
        .any(|seg| matches!(seg, Seg::Col(c) if typed(c)))
    {
        return Err(Decline);
    }
    let entity_id = format_id(&table.entity_id, key, row)?;
    let version = [version[0], version[1], version[2], version[3], offset as i128];
    let mut values = Vec::with_capacity(table.fields.len());
    if !deleted {
        for field in &table.fields {
            values.push((field, field_value(field, row, kinds)?));
        }
    }
    Ok(Mapped {
        table,
        entity_id,
        deleted,
        version,
        values,
    })
}

/// A JSON string as orjson writes it: `"` and `\` escaped, control characters as the short
/// escapes or `\u00xx`, everything else (DEL, non-ASCII, U+2028) as is.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
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

/// The state row of a complete upsert with no delete floor, byte for byte as ``encode_row``
/// writes it: ``{"v":[...],"r":{"EntityId":...,<fields in plan order>}}``.
fn encode_row(m: &Mapped) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"{\"v\":[");
    for (i, part) in m.version.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(part.to_string().as_bytes());
    }
    out.extend_from_slice(b"],\"r\":{\"EntityId\":");
    push_json_str(&mut out, &m.entity_id);
    for (field, value) in &m.values {
        out.extend_from_slice(field.lead.as_bytes());
        push_out(&mut out, value);
    }
    out.extend_from_slice(b"}}");
    out
}

/// The version of a stored row that is a live, complete entity with no older-filled fields
/// and no delete floor, read from ``encode_row``'s layout; ``None`` for any other row (the
/// caller parses it). Unescaped, ``"d":``, ``"m":``, ``"fv":`` and ``"df":`` can only be the
/// row's own keys (inside a value a quote is escaped), the argument
/// ``connector.state.codec.is_complete`` makes.
#[pyfunction]
fn peek(py: Python<'_>, raw: &[u8]) -> PyResult<Option<Py<PyTuple>>> {
    let Some(rest) = raw.strip_prefix(b"{\"v\":[") else {
        return Ok(None);
    };
    if ["\"d\":", "\"m\":", "\"fv\":", "\"df\":"]
        .iter()
        .any(|k| memmem::find(raw, k.as_bytes()).is_some())
    {
        return Ok(None);
    }
    let Some(end) = rest.iter().position(|&b| b == b']') else {
        return Ok(None);
    };
    let Ok(text) = std::str::from_utf8(&rest[..end]) else {
        return Ok(None);
    };
    let mut version = [0i128; 5];
    let mut parts = text.split(',');
    for slot in &mut version {
        match parts.next().map(str::parse::<i128>) {
            Some(Ok(n)) => *slot = n,
            _ => return Ok(None),
        }
    }
    if parts.next().is_some() {
        return Ok(None);
    }
    Ok(Some(PyTuple::new(py, version)?.unbind()))
}

/// `(the schema's logical columns, the payload)` of a schema-wrapped document, split as the
/// Python path splits it; `(None, raw)` without a schema; `None` (decline) for a document the
/// Python path would parse whole instead.
fn unwrap<T>(raw: &[u8], kinds: impl FnOnce(&[u8]) -> Option<Arc<T>>) -> Option<(Option<Arc<T>>, &[u8])> {
    match connect::split(raw) {
        Some((schema, payload)) => Some((Some(kinds(schema)?), payload)),
        None if raw.starts_with(b"{\"schema\":") => None,
        None => Some((None, raw)),
    }
}

/// One topic's compiled mapping: ``Core(plan_json, markers).map(key, value, offset)``.
#[pyclass(frozen, module = "carecloud_fastpath")]
struct Core {
    tables: HashMap<String, Table>,
    markers: Vec<memmem::Finder<'static>>,
    entity_names: HashMap<String, Py<PyString>>,
    schemas: SchemaCache,
}

#[pymethods]
impl Core {
    #[new]
    fn new(py: Python<'_>, plan: &str, markers: Vec<Vec<u8>>) -> PyResult<Self> {
        let mut plan: Plan =
            serde_json::from_str(plan).map_err(|e| PyValueError::new_err(format!("fast path plan: {e}")))?;
        let mut entity_names = HashMap::new();
        for table in plan.tables.values_mut() {
            entity_names.insert(table.entity.clone(), PyString::intern(py, &table.entity).unbind());
            for field in &mut table.fields {
                let mut lead = vec![b','];
                push_json_str(&mut lead, &field.name);
                lead.push(b':');
                field.lead = String::from_utf8(lead).map_err(|e| PyValueError::new_err(e.to_string()))?;
            }
        }
        let markers = markers
            .iter()
            .filter(|m| !m.is_empty())
            .map(|m| memmem::Finder::new(m).into_owned())
            .collect();
        Ok(Core {
            tables: plan.tables,
            markers,
            entity_names,
            schemas: SchemaCache::default(),
        })
    }

    /// ``(entity, entity_id, deleted, version, key, row)`` or ``None`` (the Python path
    /// decides): ``key`` is the state key, ``row`` the encoded state row of an upsert over
    /// no stored row (``None`` for a delete).
    fn map<'py>(
        &self,
        py: Python<'py>,
        key: &[u8],
        value: &[u8],
        offset: i64,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        if self.markers.iter().any(|m| m.find(value).is_some()) {
            return Ok(None); // may hold an unchanged-TOAST placeholder
        }
        let Some((value_kinds, value)) = unwrap(value, |schema| self.schemas.value(schema)) else {
            return Ok(None);
        };
        let Some((key_kinds, key)) = unwrap(key, |schema| self.schemas.key(schema)) else {
            return Ok(None);
        };
        let (Some(doc), Some(key)) = (json::parse(value), json::parse(key)) else {
            return Ok(None);
        };
        let schemas = Schemas {
            value: value_kinds.as_deref(),
            key: key_kinds.as_deref(),
        };
        let Ok(m) = map_message(&self.tables, &doc, &key, offset, &schemas) else {
            return Ok(None);
        };
        let row = if m.deleted {
            py.None().into_bound(py)
        } else {
            PyBytes::new(py, &encode_row(&m)).into_any()
        };
        let mut state_key = Vec::with_capacity(m.table.entity.len() + 1 + m.entity_id.len());
        state_key.extend_from_slice(m.table.entity.as_bytes());
        state_key.push(b'/');
        state_key.extend_from_slice(m.entity_id.as_bytes());
        let entity = match self.entity_names.get(&m.table.entity) {
            Some(name) => name.bind(py).clone().into_any(),
            None => PyString::new(py, &m.table.entity).into_any(),
        };
        Ok(Some(PyTuple::new(
            py,
            [
                entity,
                PyString::new(py, &m.entity_id).into_any(),
                m.deleted.into_pyobject(py)?.to_owned().into_any(),
                PyTuple::new(py, m.version)?.into_any(),
                PyBytes::new(py, &state_key).into_any(),
                row,
            ],
        )?))
    }
}

#[pymodule]
fn carecloud_fastpath(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Core>()?;
    m.add_function(wrap_pyfunction!(peek, m)?)?;
    m.add_class::<snapshot::CutSpill>()?;
    m.add_class::<snapshot::Rows>()?;
    m.add_class::<snapshot::CsvRows>()?;
    m.add_function(wrap_pyfunction!(snapshot::digest_diff, m)?)?;
    Ok(())
}
