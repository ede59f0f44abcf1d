//! Debezium JSON *with* its schema (`JsonConverter` with `schemas.enable=true`, Debezium's
//! default): the `{"schema": ..., "payload": ...}` split and the logical types a schema gives
//! columns, as `connector.source.debezium` and `connector.source._logical` read them.
//!
//! The Python path converts every logical column of the row (a date from days, a timestamp
//! from millis, micros or nanos, a decimal from base64) before mapping, and refuses the
//! message if one does not convert. Here each such column is only *checked* the same way;
//! the mapping then reads the wire value where the result is provably the same (a date
//! column into a date field, a timestamp into a timestamp field with the schema's unit, a
//! decimal into a decimal field of the same scale) and declines everywhere else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::json::{self, J};

/// A column's logical type, as far as the fast path follows it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Logical {
    /// Days since the epoch.
    Date,
    /// Units since the epoch; micros = value * 1e6 / divisor, floored.
    Timestamp { divisor: i64 },
    /// Base64 of the unscaled big-endian integer.
    Decimal { scale: i64 },
    /// Converted by the Python path in a way not followed here (variable-scale decimals,
    /// zoned timestamps, an unusual scale parameter): present and not null, it declines.
    Other,
}

pub type Kinds = HashMap<String, Logical>;

/// The logical columns of a value schema's `before` and `after` structs.
pub struct ValueKinds {
    pub before: Kinds,
    pub after: Kinds,
}

const SCHEMA_PREFIX: &[u8] = b"{\"schema\":";
const PAYLOAD_SEP: &[u8] = b",\"payload\":";
const CACHE_SIZE: usize = 64;
/// The longest unscaled decimal the Python path takes (`MAX_DECIMAL_BYTES` in
/// connector/source/limits.py): a longer one is refused there, so it is never "converted" here.
const MAX_DECIMAL_BYTES: usize = 128;

/// `(schema bytes, payload bytes)` exactly as `_Wrapped.fast` splits a document, or `None`
/// when it would not (the Python path then parses the whole document: declined here).
pub fn split(raw: &[u8]) -> Option<(&[u8], &[u8])> {
    if !raw.starts_with(SCHEMA_PREFIX) || !raw.ends_with(b"}") {
        return None;
    }
    let cut = memchr::memmem::find(&raw[10..], PAYLOAD_SEP)? + 10;
    if cut + PAYLOAD_SEP.len() > raw.len() - 1 {
        return None;
    }
    Some((&raw[10..cut], &raw[cut + PAYLOAD_SEP.len()..raw.len() - 1]))
}

/// `int(raw)` for a decimal's `scale` parameter, where Rust reads it the same; `None` (a
/// missing or unreadable scale) is 0 in Python.
fn scale_of(raw: Option<&J>) -> Option<i64> {
    match raw {
        None | Some(J::Null) => Some(0),
        Some(J::Num(text)) if !text.contains(['.', 'e', 'E']) => text.parse().ok(),
        Some(J::Str(s)) if !s.is_empty() && s.len() <= 6 && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().ok()
        }
        _ => None,
    }
}

/// `_converter(name, type, scale)`: the logical type Python would convert the column by.
fn logical(name: Option<&J>, base_type: Option<&J>, scale: Option<&J>) -> Option<Logical> {
    let name = name?.as_str()?;
    match name {
        "org.apache.kafka.connect.data.Decimal" | "decimal" => match base_type.and_then(J::as_str) {
            Some("bytes" | "fixed") => Some(match scale_of(scale) {
                Some(s) => Logical::Decimal { scale: s },
                None => Logical::Other,
            }),
            _ => None,
        },
        "io.debezium.time.Date" | "org.apache.kafka.connect.data.Date" | "date" => Some(Logical::Date),
        "io.debezium.time.Timestamp" | "org.apache.kafka.connect.data.Timestamp" | "timestamp-millis" => {
            Some(Logical::Timestamp { divisor: 1_000 })
        }
        "io.debezium.time.MicroTimestamp" | "timestamp-micros" => {
            Some(Logical::Timestamp { divisor: 1_000_000 })
        }
        "io.debezium.time.NanoTimestamp" => Some(Logical::Timestamp {
            divisor: 1_000_000_000,
        }),
        "io.debezium.data.VariableScaleDecimal" | "io.debezium.time.ZonedTimestamp" => Some(Logical::Other),
        _ => None,
    }
}

/// `connect_plan(struct)`: the logical columns of a Connect struct schema (empty if it is not one).
pub fn struct_kinds(schema: Option<&J>) -> Kinds {
    let mut kinds = Kinds::new();
    let Some(J::Arr(fields)) = schema
        .filter(|s| s.pairs().is_some())
        .and_then(|s| s.get("fields"))
    else {
        return kinds;
    };
    for field in fields {
        let Some(name) = field.pairs().and(field.get("field")).and_then(J::as_str) else {
            continue;
        };
        let params = field.get("parameters").filter(|p| p.pairs().is_some());
        // Like the plan's dict: a later field of the same name with no logical type keeps the
        // earlier one's entry.
        if let Some(kind) = logical(
            field.get("name"),
            field.get("type"),
            params.and_then(|p| p.get("scale")),
        ) {
            kinds.insert(name.to_owned(), kind);
        }
    }
    kinds
}

/// `_value_plans(schema)`: the `before` and `after` structs' logical columns.
fn value_kinds(schema: &J) -> ValueKinds {
    let mut by_name: HashMap<&str, &J> = HashMap::new();
    if let (Some(_), Some(J::Arr(fields))) = (schema.pairs(), schema.get("fields")) {
        for field in fields {
            if let Some(name) = field.pairs().and(field.get("field")).and_then(J::as_str) {
                by_name.insert(name, field);
            }
        }
    }
    ValueKinds {
        before: struct_kinds(by_name.get("before").copied()),
        after: struct_kinds(by_name.get("after").copied()),
    }
}

/// Schemas seen, by their exact bytes (Debezium repeats one per table with every message).
#[derive(Default)]
pub struct SchemaCache {
    values: Mutex<Vec<(Vec<u8>, Arc<ValueKinds>)>>,
    keys: Mutex<Vec<(Vec<u8>, Arc<Kinds>)>>,
}

fn cached<T>(
    cache: &Mutex<Vec<(Vec<u8>, Arc<T>)>>,
    bytes: &[u8],
    build: impl FnOnce(&J) -> T,
) -> Option<Arc<T>> {
    let mut entries = cache.lock().ok()?;
    if let Some((_, found)) = entries.iter().find(|(b, _)| b.as_slice() == bytes) {
        return Some(found.clone());
    }
    let schema = json::parse(bytes)?; // Python would parse the whole document instead
    let built = Arc::new(build(&schema));
    if entries.len() >= CACHE_SIZE {
        entries.remove(0);
    }
    entries.push((bytes.to_vec(), built.clone()));
    Some(built)
}

impl SchemaCache {
    pub fn value(&self, schema: &[u8]) -> Option<Arc<ValueKinds>> {
        cached(&self.values, schema, value_kinds)
    }

    pub fn key(&self, schema: &[u8]) -> Option<Arc<Kinds>> {
        cached(&self.keys, schema, |s| struct_kinds(Some(s)))
    }
}

const DAY_MICROS: i128 = 86_400_000_000;
// 0001-01-01 and 9999-12-31 as days since the epoch: what `datetime` holds.
const MIN_DAY: i128 = -719_162;
const MAX_DAY: i128 = 2_932_896;

/// Whether the Python path converts `value` by `kind` without refusing the message.
pub fn converts(kind: Logical, value: &J, int_of: impl Fn(&J) -> Option<i128>) -> bool {
    match kind {
        Logical::Date => int_of(value).is_some_and(|d| (MIN_DAY..=MAX_DAY).contains(&d)),
        Logical::Timestamp { divisor } => int_of(value).is_some_and(|v| {
            let micros = (v * 1_000_000).div_euclid(divisor as i128);
            (MIN_DAY * DAY_MICROS..(MAX_DAY + 1) * DAY_MICROS).contains(&micros)
        }),
        Logical::Decimal { scale } => {
            (-1000..=1000).contains(&scale)
                && match value {
                    J::Str(text) => crate::convert::base64_strict(text)
                        .is_ok_and(|raw| !raw.is_empty() && raw.len() <= MAX_DECIMAL_BYTES),
                    _ => false, // numbers (decimal.format=NUMERIC) are not followed here
                }
        }
        Logical::Other => false,
    }
}
