//! Conversion: a Debezium JSON value to the stored form of a field, as the Python converters
//! (`connector.mapping.convert`) give it, or a `Decline` wherever the Python path must decide.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::connect::Logical;
use crate::json::J;
use crate::plan::Conv;

/// The message is not one this path maps; the Python path takes it.
pub struct Decline;

pub type R<T> = Result<T, Decline>;

// 1800-01-01 and 2200-12-31 as days since the epoch: the span the converters accept.
const FIRST_DAY: i64 = -62_091;
const LAST_DAY: i64 = 84_370;
const DAY_MICROS: i128 = 86_400_000_000;

/// One output value; `Json` is a constant or a null value's JSON text from the plan.
pub enum Out<'a> {
    Str(String),
    Borrowed(&'a str),
    Int(i128),
    Bool(bool),
    Json(&'a str),
}

impl Out<'_> {
    /// The same value, owning its text (for a value converted from a temporary).
    pub fn into_owned<'b>(self) -> R<Out<'b>> {
        Ok(match self {
            Out::Str(s) => Out::Str(s),
            Out::Borrowed(s) => Out::Str(s.to_owned()),
            Out::Int(i) => Out::Int(i),
            Out::Bool(b) => Out::Bool(b),
            Out::Json(_) => return Err(Decline),
        })
    }
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

pub fn int_of(v: &J) -> R<i128> {
    match v {
        J::Num(text) => match number(text)? {
            Num::Int(i) => Ok(i),
            Num::Float => Err(Decline),
        },
        _ => Err(Decline),
    }
}

pub fn absent(v: Option<&J>) -> bool {
    v.is_none_or(J::is_null)
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
pub fn base64_strict(text: &str) -> R<Vec<u8>> {
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
pub fn converted<'a>(
    conv: &'a Conv,
    enum_map: &'a Option<HashMap<String, String>>,
    value: &'a J,
) -> R<Out<'a>> {
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
pub fn logical_value<'a>(kind: Logical, conv: &Conv, raw: &'a J) -> R<Out<'a>> {
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

/// A logical column's value as the Python decoder types it, for the row's source columns
/// (`row::source_text`): the tag `connector.mapping.source_columns` writes for its Python type
/// (`\u0000d` a date, `\u0000t` a UTC timestamp at full precision, `\u0000n` a decimal) and the
/// text, as `date.isoformat()`, `datetime.isoformat()` and `str(Decimal)` give it; a decline
/// for any other kind, and for decimals of a scale whose `str` could take an exponent.
pub fn source_typed(kind: Logical, raw: &J) -> R<(&'static str, String)> {
    let (tag, out) = match kind {
        Logical::Date => ("\u{0}d", convert(&Conv::Date, raw)?),
        Logical::Timestamp { divisor } => (
            "\u{0}t",
            convert(
                &Conv::Timestamp {
                    divisor,
                    millis: false,
                },
                raw,
            )?,
        ),
        Logical::Decimal { scale } if (0..=6).contains(&scale) => (
            "\u{0}n",
            convert(
                &Conv::Decimal {
                    scale: scale as u32,
                    precision: 38,
                },
                raw,
            )?,
        ),
        _ => return Err(Decline),
    };
    match out {
        Out::Str(text) => Ok((tag, text)),
        _ => Err(Decline),
    }
}
