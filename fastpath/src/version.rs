//! The version of a change, from the Debezium source block as `connector.source.version`
//! reads it: `[phase, position..]` (the ingest appends the Kafka offset), phase 0 for a
//! snapshot read and 1 for a streamed change.

use crate::convert::{absent, int_of, Decline, R};
use crate::json::{self, J};

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

pub fn postgres_version(source: &J, phase: i128) -> R<[i128; 4]> {
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

pub fn mysql_version(source: &J, phase: i128) -> R<[i128; 4]> {
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
