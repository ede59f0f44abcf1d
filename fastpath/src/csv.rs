//! One stored state row as one CSV line, byte for byte what the Python writer makes of it
//! (`connector.sinks.formats.CsvFormat.writer(entity, stored=True)`), or a decline.
//!
//! The Python encoders are the reference (`connector.sinks._stored`, `_cells`, and `csv.writer`
//! with CRLF line ends). This code writes only what it knows they write the same way: a string
//! neutralised and quoted as `csv` quotes it, an enum symbol, a boolean, an integer literal, a
//! date and a timestamp already in the file's shape, a decimal already at its scale, and null
//! in a nullable field. Anything else — a value of the wrong type, a timestamp with another
//! offset, a decimal that needs rounding, a row it cannot parse — declines the whole row, and
//! the Python writer formats it or names its problem. tests/unit/snapshot/test_compiled_cut.py
//! holds the two to the same bytes.

use std::collections::HashSet;

use serde::Deserialize;

use crate::json::Scalar;
use crate::row;

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Cell {
    String,
    Enum { symbols: HashSet<String> },
    Boolean,
    Integer,
    Date,
    Timestamp,
    Decimal { scale: usize },
}

#[derive(Deserialize)]
pub struct Column {
    name: String,
    nullable: bool,
    #[serde(flatten)]
    cell: Cell,
}

/// The first characters that get a `'` (`connector.sinks._cells.FORMULA_TRIGGERS`).
const TRIGGERS: &[u8] = b"=+-@\t\r'";

/// Append the row's CSV line (CRLF) to `out` and return true, or leave `out` as it was and
/// return false: the Python writer takes the row.
pub fn row(columns: &[Column], raw: &[u8], out: &mut Vec<u8>) -> bool {
    let start = out.len();
    if write_row(columns, raw, out).is_none() {
        out.truncate(start);
        return false;
    }
    true
}

fn write_row(columns: &[Column], raw: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let pairs = row::values(raw)?;
    // The stored values are in schema order: then each column is its pair, and there can be
    // no duplicate key. Otherwise look each up as a dict would (the last of equal keys).
    let aligned = pairs.len() == columns.len() && pairs.iter().zip(columns).all(|((k, _), c)| *k == c.name);
    for (i, column) in columns.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let value = if aligned {
            Some(&pairs[i].1)
        } else {
            pairs
                .iter()
                .rev()
                .find(|(k, _)| *k == column.name)
                .map(|(_, v)| v)
        };
        match value {
            None | Some(Scalar::Null) => column.nullable.then_some(())?,
            Some(value) => write_cell(&column.cell, value, out)?,
        }
    }
    out.extend_from_slice(b"\r\n");
    Some(())
}

fn write_cell(cell: &Cell, value: &Scalar, out: &mut Vec<u8>) -> Option<()> {
    match (cell, value) {
        (Cell::String, Scalar::Str(s)) => {
            let neutralise = s.as_bytes().first().is_some_and(|b| TRIGGERS.contains(b));
            quoted(out, neutralise, s.as_bytes())
        }
        (Cell::Enum { symbols }, Scalar::Str(s)) if symbols.contains(s.as_ref()) => {
            quoted(out, false, s.as_bytes())
        }
        (Cell::Boolean, Scalar::Bool(b)) => {
            out.extend_from_slice(if *b { b"true" } else { b"false" });
            Some(())
        }
        (Cell::Integer, Scalar::Num(text)) => {
            let digits = text.strip_prefix('-').unwrap_or(text);
            let plain = digits.len() <= 18 && digits.bytes().all(|b| b.is_ascii_digit());
            (plain && *text != "-0").then(|| out.extend_from_slice(text.as_bytes()))
        }
        (Cell::Date, Scalar::Str(s)) if s.len() == 10 && s.is_ascii() => quoted(out, false, s.as_bytes()),
        (Cell::Timestamp, Scalar::Str(s)) if s.is_ascii() && s.ends_with("+00:00") => match s.len() {
            32 => {
                quoted(out, false, &s.as_bytes()[..23])?;
                out.push(b'Z');
                Some(())
            }
            25 => {
                quoted(out, false, &s.as_bytes()[..19])?;
                out.extend_from_slice(b".000Z");
                Some(())
            }
            _ => None,
        },
        (Cell::Decimal { scale }, Scalar::Str(s)) => {
            // `_stored._decimal`: a "." where the scale puts it, no exponent, not "-0.00".
            let b = s.as_bytes();
            let negative_zero =
                b.len() == 3 + scale && b.starts_with(b"-0.") && b[3..].iter().all(|&c| c == b'0');
            let at_scale = *scale > 0
                && s.is_ascii()
                && b.len() > *scale
                && b[b.len() - scale - 1] == b'.'
                && !b.contains(&b'E')
                && !negative_zero;
            at_scale.then_some(())?;
            quoted(out, false, b)
        }
        _ => None,
    }
}

/// A cell as `csv.writer` writes it (QUOTE_MINIMAL): in quotes, with quotes doubled, when it
/// holds a comma, a quote, CR or LF; as is otherwise. A NUL declines (left to the reference).
fn quoted(out: &mut Vec<u8>, neutralise: bool, text: &[u8]) -> Option<()> {
    let (mut quote, mut nul) = (false, false);
    for &b in text {
        quote |= matches!(b, b',' | b'"' | b'\r' | b'\n');
        nul |= b == 0;
    }
    if nul {
        return None;
    }
    if quote {
        out.push(b'"');
    }
    if neutralise {
        out.push(b'\'');
    }
    if quote {
        for &b in text {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(text);
    }
    Some(())
}
