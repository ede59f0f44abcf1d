//! The version of a change, from the Debezium source block as `connector.source.version`
//! reads it: `[phase, position..]` (the ingest appends the Kafka offset). PostgreSQL: phase
//! `2 * L_snap` for an initial snapshot's read, `2 * G + 1` for a streamed change or an
//! incremental snapshot's read, `G` the source partition's generation (docs/decisions/0019).
//! MySQL: 0 for a read, `2 * G + 1` (1: its partitions stay generation 0) for a change.

use crate::convert::{absent, int_of, Decline, R};
use crate::json::{self, J};

/// The position's row when its last commit is null (`connector.source.version.NO_LAST_COMMIT`).
pub const NO_LAST_COMMIT: i128 = 1;

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
        J::Arr(items) if items.len() == 2 => {
            // A null last commit (a snapshot's read, or the first transaction after a
            // snapshot): its own LSN stands in, and the row marks it (`NO_LAST_COMMIT`).
            let minor = lsn(&items[1])?;
            if matches!(items[0], J::Null) {
                return Ok([phase, minor, minor, NO_LAST_COMMIT]);
            }
            Ok([phase, lsn(&items[0])?, minor, 0])
        }
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

/// A PostgreSQL position (`postgres_version`'s) with its phase: twice the snapshot LSN for an
/// initial snapshot's read, else the generation's streamed phase (`version.py`).
/// A snapshot LSN beyond 63 bits is declined (Python refuses it: `2 * G + 1` must fit a u64).
pub fn postgres_phase(position: [i128; 4], initial: bool, generation: u64) -> R<[i128; 4]> {
    let phase = if initial {
        let lsn = position[1].max(position[2]);
        if lsn > i128::from(i64::MAX) {
            return Err(Decline);
        }
        2 * lsn
    } else {
        2 * i128::from(generation) + 1
    };
    Ok([phase, position[1], position[2], position[3]])
}

/// Whether a row last written at `version` is older than the snapshot of `generation`, which
/// then, complete and not having read it, swept it (`connector.source.version.predates`: the
/// first transaction after a snapshot, `[null, lsn]`, cannot be placed and is never swept).
pub fn predates(version: &[i128; 5], generation: i128) -> bool {
    if version[0] >= 2 * generation {
        return false;
    }
    if version[0] & 1 == 0 {
        return true;
    }
    if version[3] == NO_LAST_COMMIT && version[1] == version[2] {
        return false;
    }
    version[1].max(version[2]) < generation
}
