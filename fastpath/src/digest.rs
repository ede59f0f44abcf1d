//! The delivered set's digest: one `(EntityId, content hash)` per record, in EntityId order, so
//! the next delivery can say what was added, removed and changed without keeping the records
//! (`connector.snapshot.digest` is the reference and the fallback; docs/decisions/0015).
//!
//! The content hash is BLAKE2b with an 8-byte digest (Python's `hashlib.blake2b(digest_size=8)`)
//! over the record's values in the entity's field order, each written as a tag and its text:
//! `n` for null or absent, `t`/`f` for a boolean, `i<number text>\xff` for a number, and
//! `s<utf-8>\xff` for a string (0xff never occurs in UTF-8). The stored JSON's key order is
//! not used: a merged row keeps fields in the order they arrived, a full row in schema order.
//!
//! A digest file is a sequence of records: a u32 (little endian) EntityId length, the
//! EntityId's bytes, the 8 hash bytes.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use blake2::digest::{Update, VariableOutput};
use blake2::Blake2bVar;

use crate::json::Scalar;

pub const HASH_BYTES: usize = 8;

/// The record's content hash from its values' pairs (`row::values`).
pub fn content_hash(fields: &[String], pairs: &[(Cow<'_, str>, Scalar<'_>)]) -> [u8; HASH_BYTES] {
    let aligned = pairs.len() == fields.len() && pairs.iter().zip(fields).all(|((k, _), f)| k == f);
    let mut hasher = Blake2bVar::new(HASH_BYTES).expect("8 is a valid BLAKE2b output size");
    for (i, field) in fields.iter().enumerate() {
        let value = if aligned {
            Some(&pairs[i].1)
        } else {
            // As a dict reads it: the last of equal keys.
            pairs.iter().rev().find(|(k, _)| k == field).map(|(_, v)| v)
        };
        match value {
            None | Some(Scalar::Null) => hasher.update(b"n"),
            Some(Scalar::Bool(true)) => hasher.update(b"t"),
            Some(Scalar::Bool(false)) => hasher.update(b"f"),
            Some(Scalar::Num(text)) => {
                hasher.update(b"i");
                hasher.update(text.as_bytes());
                hasher.update(b"\xff");
            }
            Some(Scalar::Str(text)) => {
                hasher.update(b"s");
                hasher.update(text.as_bytes());
                hasher.update(b"\xff");
            }
        }
    }
    let mut out = [0u8; HASH_BYTES];
    hasher
        .finalize_variable(&mut out)
        .expect("the buffer has the output size");
    out
}

/// Writes digest records to a file.
pub struct Writer {
    out: BufWriter<File>,
    pub count: u64,
}

impl Writer {
    pub fn create(path: &Path) -> io::Result<Writer> {
        Ok(Writer {
            out: BufWriter::with_capacity(256 << 10, File::create(path)?),
            count: 0,
        })
    }

    pub fn push(&mut self, id: &[u8], hash: &[u8; HASH_BYTES]) -> io::Result<()> {
        let len = u32::try_from(id.len()).map_err(|_| io::Error::other("an EntityId over 4 GiB"))?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(id)?;
        self.out.write_all(hash)?;
        self.count += 1;
        Ok(())
    }

    pub fn finish(mut self) -> io::Result<u64> {
        self.out.flush()?;
        Ok(self.count)
    }
}

struct Reader {
    input: BufReader<File>,
    id: Vec<u8>,
    hash: [u8; HASH_BYTES],
    live: bool,
}

impl Reader {
    fn open(path: &Path) -> io::Result<Reader> {
        let mut reader = Reader {
            input: BufReader::with_capacity(256 << 10, File::open(path)?),
            id: Vec::new(),
            hash: [0; HASH_BYTES],
            live: true,
        };
        reader.advance()?;
        Ok(reader)
    }

    fn advance(&mut self) -> io::Result<()> {
        let mut len = [0u8; 4];
        match self.input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                self.live = false;
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        let previous = std::mem::take(&mut self.id);
        self.id.resize(u32::from_le_bytes(len) as usize, 0);
        self.input.read_exact(&mut self.id)?;
        self.input.read_exact(&mut self.hash)?;
        if !previous.is_empty() && previous >= self.id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "digest records are not in strictly increasing EntityId order",
            ));
        }
        Ok(())
    }
}

/// What changed from `previous` to `current`: (added, removed, changed, unchanged).
pub fn diff(previous: &Path, current: &Path) -> io::Result<[u64; 4]> {
    let (mut old, mut new) = (Reader::open(previous)?, Reader::open(current)?);
    let mut counts = [0u64; 4];
    while old.live || new.live {
        let order = match (old.live, new.live) {
            (true, true) => old.id.as_slice().cmp(new.id.as_slice()),
            (true, false) => Ordering::Less,
            _ => Ordering::Greater,
        };
        match order {
            Ordering::Greater => {
                counts[0] += 1;
                new.advance()?;
            }
            Ordering::Less => {
                counts[1] += 1;
                old.advance()?;
            }
            Ordering::Equal => {
                counts[if old.hash == new.hash { 3 } else { 2 }] += 1;
                old.advance()?;
                new.advance()?;
            }
        }
    }
    Ok(counts)
}
