//! The snapshot's copy of the state as of a cut: an external merge sort instead of RocksDB
//! (docs/decisions/0013).
//!
//! The Python reader (`connector.snapshot.cut.StateReader`) is the reference: it spills every
//! record into RocksDB, surveys it, answers the parent checks with one point lookup per
//! association and formats every row in Python, about 19 µs per record at 1M entities. Here
//! the same work is a sort: records are appended to a buffer that is sorted and written as a
//! run file on a second thread whenever it fills (memory stays at two buffers whatever the
//! state's size). One merge of the runs, in key order, surveys the state: counts, incomplete
//! rows, a file of each entity's complete EntityIds, and the (parent id, child id) pairs of the
//! associations, sorted the same way, so the parent checks are a merge join against the
//! EntityId files. Each entity's rows are then read by merging just its range of every run:
//! the rows are written to disk once, in the runs, and nothing is looked up at random.
//!
//! What it answers, and the reference answers the same (tests/unit/snapshot/test_compiled_cut.py
//! and tests/integration/test_snapshot_compiled.py hold the two to it): the rows of each entity in EntityId
//! order, the winner of a key seen more than once by the higher version (a later record wins
//! a tie), the complete-row counts, the incomplete rows' EntityIds, and a superset of the
//! orphans (`candidates`): any row with an association that is not a string, or whose parent
//! is not a complete row, or is itself a candidate. The Python check decides over that
//! superset exactly as it decides over every row, since a row outside it cannot be an orphan.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::LazyLock;
use std::thread::JoinHandle;

use memchr::memmem::Finder;

use crate::json::{self, Scalar, J};

/// One buffered record: where its key and value sit in the arena, and its arrival order.
struct Entry {
    at: usize,
    key_len: u32,
    value_len: u32,
    seq: u64,
}

/// Records between two entries of a sparse index.
const INDEX_EVERY: u64 = 64;

/// A sorted run file, `[u32 key length][u32 value length][u64 seq][key][value]` in `(key, seq)`
/// order, with every `INDEX_EVERY`th key and its offset, to start reading at a key.
pub struct Run {
    path: PathBuf,
    index: Vec<(Vec<u8>, u64)>,
}

/// Appends records; sorts and writes them as runs, one buffer at a time on a second thread
/// while the next fills. The two buffers are reused from run to run: fresh ones cost page
/// faults for every run, and freeing and allocating them in turn let the allocator's heap
/// grow with the number of runs (peak RSS 35 MB higher at 4M entities than at 1M).
pub struct Sorter {
    dir: PathBuf,
    tag: &'static str,
    budget: usize,
    arena: Vec<u8>,
    entries: Vec<Entry>,
    runs: Vec<Run>,
    writing: Option<JoinHandle<io::Result<Written>>>,
    spare: Option<(Vec<u8>, Vec<Entry>)>,
}

/// A run written, and the buffers it was written from, for the next one.
type Written = (Run, Vec<u8>, Vec<Entry>);

impl Sorter {
    pub fn new(dir: &Path, tag: &'static str, budget: usize) -> Self {
        Sorter {
            dir: dir.to_path_buf(),
            tag,
            budget,
            arena: Vec::new(),
            entries: Vec::new(),
            runs: Vec::new(),
            writing: None,
            spare: None,
        }
    }

    pub fn push(&mut self, key: &[u8], value: &[u8], seq: u64) -> io::Result<()> {
        let (Ok(key_len), Ok(value_len)) = (u32::try_from(key.len()), u32::try_from(value.len())) else {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                "a state record over 4 GiB",
            ));
        };
        self.entries.push(Entry {
            at: self.arena.len(),
            key_len,
            value_len,
            seq,
        });
        self.arena.extend_from_slice(key);
        self.arena.extend_from_slice(value);
        if self.arena.len() >= self.budget {
            self.spill()?;
        }
        Ok(())
    }

    fn spill(&mut self) -> io::Result<()> {
        if self.entries.is_empty() {
            return Ok(());
        }
        self.wait()?;
        let (arena, entries) = self
            .spare
            .take()
            .unwrap_or_else(|| (Vec::with_capacity(self.budget + (1 << 16)), Vec::new()));
        let arena = std::mem::replace(&mut self.arena, arena);
        let entries = std::mem::replace(&mut self.entries, entries);
        let path = self.dir.join(format!("{}-{}.run", self.tag, self.runs.len()));
        self.writing = Some(std::thread::spawn(move || write_run(path, arena, entries)));
        Ok(())
    }

    fn wait(&mut self) -> io::Result<()> {
        if let Some(handle) = self.writing.take() {
            let (run, mut arena, mut entries) = handle
                .join()
                .map_err(|_| io::Error::other("the run writer panicked"))??;
            self.runs.push(run);
            arena.clear();
            entries.clear();
            self.spare = Some((arena, entries));
        }
        Ok(())
    }

    /// The runs, once every record is written.
    pub fn finish(mut self) -> io::Result<Vec<Run>> {
        self.spill()?;
        self.wait()?;
        Ok(self.runs)
    }
}

fn write_run(path: PathBuf, arena: Vec<u8>, mut entries: Vec<Entry>) -> io::Result<Written> {
    let key = |e: &Entry| &arena[e.at..e.at + e.key_len as usize];
    entries.sort_unstable_by(|a, b| key(a).cmp(key(b)).then(a.seq.cmp(&b.seq)));
    let mut out = BufWriter::with_capacity(1 << 20, File::create(&path)?);
    let mut index = Vec::with_capacity(entries.len() / INDEX_EVERY as usize + 1);
    let mut offset = 0u64;
    for (i, e) in entries.iter().enumerate() {
        if (i as u64).is_multiple_of(INDEX_EVERY) {
            index.push((key(e).to_vec(), offset));
        }
        out.write_all(&e.key_len.to_le_bytes())?;
        out.write_all(&e.value_len.to_le_bytes())?;
        out.write_all(&e.seq.to_le_bytes())?;
        out.write_all(&arena[e.at..e.at + (e.key_len + e.value_len) as usize])?;
        offset += 16 + u64::from(e.key_len + e.value_len);
    }
    out.flush()?;
    Ok((Run { path, index }, arena, entries))
}

/// One record, its buffers reused from record to record.
#[derive(Default)]
pub struct Rec {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub seq: u64,
}

/// Read the next `[u32][u32][u64][key][value]` record into `rec`; false at the end.
fn read_record(input: &mut impl Read, rec: &mut Rec) -> io::Result<bool> {
    let mut head = [0u8; 16];
    match input.read_exact(&mut head[..1]) {
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(false),
        other => other?,
    }
    input.read_exact(&mut head[1..])?;
    let word = |i: usize| u32::from_le_bytes(head[i..i + 4].try_into().expect("4 bytes")) as usize;
    rec.seq = u64::from_le_bytes(head[8..16].try_into().expect("8 bytes"));
    read_into(input, &mut rec.key, word(0))?;
    read_into(input, &mut rec.value, word(4))?;
    Ok(true)
}

fn read_into(input: &mut impl Read, buffer: &mut Vec<u8>, len: usize) -> io::Result<()> {
    buffer.clear();
    buffer.resize(len, 0);
    input.read_exact(buffer)
}

/// A run read from its first key at or after some key.
struct Cursor {
    input: BufReader<File>,
    rec: Rec,
}

impl Cursor {
    fn open(run: &Run, from: &[u8]) -> io::Result<Option<Cursor>> {
        let slot = run.index.partition_point(|(key, _)| key.as_slice() < from);
        let mut file = File::open(&run.path)?;
        file.seek(SeekFrom::Start(if slot == 0 { 0 } else { run.index[slot - 1].1 }))?;
        let mut cursor = Cursor {
            input: BufReader::with_capacity(128 << 10, file),
            rec: Rec::default(),
        };
        while cursor.advance()? {
            if cursor.rec.key.as_slice() >= from {
                return Ok(Some(cursor));
            }
        }
        Ok(None)
    }

    fn advance(&mut self) -> io::Result<bool> {
        read_record(&mut self.input, &mut self.rec)
    }
}

fn order(x: &Rec, y: &Rec) -> Ordering {
    x.key.cmp(&y.key).then(x.seq.cmp(&y.seq))
}

/// A k-way merge of the runs' records whose keys start with a prefix, in `(key, seq)` order.
pub struct Merge {
    cursors: Vec<Cursor>,
    /// A binary min-heap of indices into `cursors`.
    heap: Vec<usize>,
    prefix: Vec<u8>,
    spare: Rec,
}

impl Merge {
    pub fn open(runs: &[Run], prefix: &[u8]) -> io::Result<Merge> {
        let mut cursors = Vec::with_capacity(runs.len());
        for run in runs {
            if let Some(cursor) = Cursor::open(run, prefix)? {
                cursors.push(cursor);
            }
        }
        let mut heap: Vec<usize> = (0..cursors.len()).collect();
        heap.sort_by(|&a, &b| order(&cursors[a].rec, &cursors[b].rec)); // a sorted array is a heap
        Ok(Merge {
            heap,
            cursors,
            prefix: prefix.to_vec(),
            spare: Rec::default(),
        })
    }

    fn sift_down(&mut self) {
        let mut i = 0;
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut least = i;
            for child in [l, r] {
                let less = |a: usize, b: usize| order(&self.cursors[a].rec, &self.cursors[b].rec).is_lt();
                if child < self.heap.len() && less(self.heap[child], self.heap[least]) {
                    least = child;
                }
            }
            if least == i {
                return;
            }
            self.heap.swap(i, least);
            i = least;
        }
    }

    /// Move the least record into `out`; false once no record with the prefix is left.
    fn pop(&mut self, out: &mut Rec) -> io::Result<bool> {
        let Some(&top) = self.heap.first() else {
            return Ok(false);
        };
        let cursor = &mut self.cursors[top];
        if !cursor.rec.key.starts_with(&self.prefix) {
            self.heap.clear(); // the least key is past the prefix, so is every other
            return Ok(false);
        }
        std::mem::swap(out, &mut cursor.rec);
        if !cursor.advance()? {
            self.heap.swap_remove(0);
        }
        self.sift_down();
        Ok(true)
    }

    fn peek_key(&self) -> Option<&[u8]> {
        self.heap.first().map(|&top| self.cursors[top].rec.key.as_slice())
    }

    /// The next key's winning record, into `best`: the highest version, a later record winning
    /// a tie (as the Python reader keeps the later of equal versions).
    pub fn next_key(&mut self, best: &mut Rec) -> io::Result<bool> {
        if !self.pop(best)? {
            return Ok(false);
        }
        while self.peek_key() == Some(best.key.as_slice()) {
            let mut other = std::mem::take(&mut self.spare);
            self.pop(&mut other)?;
            if (version(&other.value)?, other.seq) >= (version(&best.value)?, best.seq) {
                std::mem::swap(best, &mut other);
            }
            self.spare = other;
        }
        Ok(true)
    }
}

/// A stored row's version as the list Python compares (`orjson.loads(row)["v"]`).
fn version(row: &[u8]) -> io::Result<Vec<i128>> {
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

static DELETED: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"d\":"));
static MISSING: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"m\":"));

/// `connector.state.codec.is_complete`: no delete flag and no missing fields, unparsed.
pub fn is_complete(row: &[u8]) -> bool {
    DELETED.find(row).is_none() && MISSING.find(row).is_none()
}

/// An entity's complete rows, in EntityId order, read from its range of every run.
pub struct Scan {
    merge: Merge,
    rec: Rec,
    skip: usize,
}

impl Scan {
    pub fn open(runs: &[Run], entity: &str) -> io::Result<Scan> {
        let mut prefix = entity.as_bytes().to_vec();
        prefix.push(b'/');
        Ok(Scan {
            skip: prefix.len(),
            merge: Merge::open(runs, &prefix)?,
            rec: Rec::default(),
        })
    }

    /// `(EntityId, row)` of the next complete row.
    pub fn next(&mut self) -> io::Result<Option<(&[u8], &[u8])>> {
        while self.merge.next_key(&mut self.rec)? {
            if is_complete(&self.rec.value) {
                return Ok(Some((&self.rec.key[self.skip..], &self.rec.value)));
            }
        }
        Ok(None)
    }
}

/// One entity as surveyed: its complete rows' count and EntityIds, its incomplete rows.
pub struct EntityIds {
    path: PathBuf,
    pub count: u64,
    pub incomplete: Vec<String>,
    /// Every `INDEX_EVERY`th EntityId and its offset in the file, for `contains`.
    index: Vec<(Vec<u8>, u64)>,
    size: u64,
}

impl EntityIds {
    /// Whether a complete row has this EntityId: the sparse index, then one read.
    pub fn contains(&self, id: &[u8]) -> io::Result<bool> {
        let slot = self.index.partition_point(|(first, _)| first.as_slice() <= id);
        if slot == 0 {
            return Ok(false);
        }
        let from = self.index[slot - 1].1;
        let to = self.index.get(slot).map_or(self.size, |(_, at)| *at);
        let mut block = vec![0u8; (to - from) as usize];
        File::open(&self.path)?.read_exact_at(&mut block, from)?;
        let (mut input, mut found) = (&block[..], Vec::new());
        while read_id(&mut input, &mut found)? {
            match found.as_slice().cmp(id) {
                Ordering::Less => continue,
                Ordering::Equal => return Ok(true),
                Ordering::Greater => return Ok(false),
            }
        }
        Ok(false)
    }

    fn reader(&self) -> io::Result<BufReader<File>> {
        Ok(BufReader::with_capacity(128 << 10, File::open(&self.path)?))
    }
}

/// Read the next `[u32 length][EntityId]` of an EntityId file into `id`; false at the end.
fn read_id(input: &mut impl Read, id: &mut Vec<u8>) -> io::Result<bool> {
    let mut head = [0u8; 4];
    match input.read_exact(&mut head[..1]) {
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(false),
        other => other?,
    }
    input.read_exact(&mut head[1..])?;
    read_into(input, id, u32::from_le_bytes(head) as usize)?;
    Ok(true)
}

struct IdWriter {
    out: BufWriter<File>,
    ids: EntityIds,
}

impl IdWriter {
    fn create(path: PathBuf) -> io::Result<Self> {
        Ok(IdWriter {
            out: BufWriter::with_capacity(256 << 10, File::create(&path)?),
            ids: EntityIds {
                path,
                count: 0,
                incomplete: Vec::new(),
                index: Vec::new(),
                size: 0,
            },
        })
    }

    fn write(&mut self, id: &[u8]) -> io::Result<()> {
        if self.ids.count.is_multiple_of(INDEX_EVERY) {
            self.ids.index.push((id.to_vec(), self.ids.size));
        }
        self.out.write_all(&(id.len() as u32).to_le_bytes())?;
        self.out.write_all(id)?;
        self.ids.count += 1;
        self.ids.size += 4 + id.len() as u64;
        Ok(())
    }

    fn close(mut self) -> io::Result<EntityIds> {
        self.out.flush()?;
        Ok(self.ids)
    }
}

/// An entity's associations: for each field, the rank of its parent in the entity order.
pub struct Links {
    pub fields: Vec<(String, usize)>,
}

/// The cut's state after the survey: the runs, each entity's EntityIds, the orphan candidates.
pub struct Survey {
    pub runs: Vec<Run>,
    pub entities: HashMap<String, EntityIds>,
    pub candidates: Vec<HashSet<Vec<u8>>>,
}

/// Each survey thread sorts its pairs in buffers of `budget / PAIR_SHARE`: a pair is about 30
/// bytes, so at 4M entities each thread's pairs filled two 32 MiB buffers and the read phase
/// peaked 90 MB higher than at 1M; at an eighth, memory stays flat and the pairs take a few
/// more (small) runs.
const PAIR_SHARE: usize = 8;

/// The survey, on two threads (each takes the next entity's range of the runs), then the merge
/// join that finds the orphan candidates. `order` lists the entities parents first; `links[rank]`
/// are that entity's associations. Keys outside these entities' ranges are not read.
pub fn survey(
    runs: Vec<Run>,
    dir: &Path,
    order: &[String],
    links: &[Links],
    budget: usize,
) -> io::Result<Survey> {
    let next = AtomicUsize::new(0);
    let done: Vec<io::Result<Surveyed>> = std::thread::scope(|scope| {
        let workers: Vec<_> = ["pairs-a", "pairs-b"]
            .into_iter()
            .map(|tag| {
                let pairs = Sorter::new(dir, tag, budget / PAIR_SHARE);
                scope.spawn(|| survey_entities(&runs, dir, order, links, pairs, &next))
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(io::Error::other("a survey thread panicked")))
            })
            .collect()
    });
    let mut entities = HashMap::new();
    let mut candidates: Vec<HashSet<Vec<u8>>> = vec![HashSet::new(); order.len()];
    let mut pair_runs = Vec::new();
    for surveyed in done {
        let surveyed = surveyed?;
        for (rank, ids, found) in surveyed.entities {
            entities.insert(order[rank].clone(), ids);
            candidates[rank] = found;
        }
        pair_runs.extend(surveyed.pairs);
    }
    join(pair_runs, order, &entities, &mut candidates)?;
    Ok(Survey {
        runs,
        entities,
        candidates,
    })
}

/// What one survey thread found: per entity its rank, EntityIds and first candidates (rows
/// with an association that is not a string), and the runs of its (parent, child) pairs.
struct Surveyed {
    entities: Vec<(usize, EntityIds, HashSet<Vec<u8>>)>,
    pairs: Vec<Run>,
}

fn survey_entities(
    runs: &[Run],
    dir: &Path,
    order: &[String],
    links: &[Links],
    mut pairs: Sorter,
    next: &AtomicUsize,
) -> io::Result<Surveyed> {
    let mut entities = Vec::new();
    let (mut pair_key, mut pair_value, mut seq) = (Vec::new(), Vec::new(), 0u64);
    let mut rec = Rec::default();
    loop {
        let rank = next.fetch_add(1, AtomicOrdering::Relaxed);
        let Some(entity) = order.get(rank) else { break };
        let prefix = [entity.as_bytes(), b"/"].concat();
        let mut merge = Merge::open(runs, &prefix)?;
        let mut writer = IdWriter::create(dir.join(format!("ids-{rank}")))?;
        let mut found = HashSet::new();
        while merge.next_key(&mut rec)? {
            let id = &rec.key[prefix.len()..];
            if !is_complete(&rec.value) {
                if DELETED.find(&rec.value).is_none() {
                    writer
                        .ids
                        .incomplete
                        .push(String::from_utf8_lossy(id).into_owned());
                }
                continue;
            }
            writer.write(id)?;
            if links[rank].fields.is_empty() {
                continue;
            }
            let Some(parent_ids) = parents(&rec.value, &links[rank]) else {
                found.insert(id.to_vec());
                continue;
            };
            for (parent, parent_id) in parent_ids {
                pair_key.clear();
                pair_key.push(parent as u8);
                pair_key.extend_from_slice(parent_id.as_bytes());
                pair_value.clear();
                pair_value.push(rank as u8);
                pair_value.extend_from_slice(id);
                pairs.push(&pair_key, &pair_value, seq)?;
                seq += 1;
            }
        }
        entities.push((rank, writer.close()?, found));
    }
    Ok(Surveyed {
        entities,
        pairs: pairs.finish()?,
    })
}

/// The parent ids of a row's associations, with each parent's rank; `None` when one is not a
/// plain string (null, a number, an unreadable row): the row is then a candidate.
fn parents<'a>(row: &'a [u8], links: &Links) -> Option<Vec<(usize, Cow<'a, str>)>> {
    let values = json::row_values(row)?;
    let mut out = Vec::with_capacity(links.fields.len());
    for (field, parent) in &links.fields {
        let (_, Scalar::Str(id)) = values.iter().rev().find(|(k, _)| k == field)? else {
            return None;
        };
        out.push((*parent, id.clone()));
    }
    Some(out)
}

/// Walk the pairs, sorted by (parent rank, parent id), beside each parent's EntityId file: a
/// child whose parent is not there, or is a candidate itself, is a candidate. Parents come
/// before their children in rank order, so a parent's candidates are known before its pairs.
fn join(
    runs: Vec<Run>,
    order: &[String],
    entities: &HashMap<String, EntityIds>,
    candidates: &mut [HashSet<Vec<u8>>],
) -> io::Result<()> {
    let mut merge = Merge::open(&runs, b"")?;
    let mut pair = Rec::default();
    let mut parent: Option<(usize, Option<BufReader<File>>)> = None;
    let (mut head, mut live) = (Vec::new(), false);
    while merge.pop(&mut pair)? {
        let rank = pair.key[0] as usize;
        let parent_id = &pair.key[1..];
        if parent.as_ref().is_none_or(|(r, _)| *r != rank) {
            let ids = entities.get(&order[rank]).map(EntityIds::reader).transpose()?;
            parent = Some((rank, ids));
            live = false;
        }
        let (_, ids) = parent.as_mut().expect("opened above");
        let mut found = false;
        if let Some(ids) = ids {
            loop {
                if !live {
                    live = read_id(ids, &mut head)?;
                    if !live {
                        break;
                    }
                }
                match head.as_slice().cmp(parent_id) {
                    Ordering::Less => live = false,
                    Ordering::Equal => {
                        found = true;
                        break;
                    }
                    Ordering::Greater => break,
                }
            }
        }
        if !found || candidates[rank].contains(parent_id) {
            let child = pair.value[0] as usize;
            candidates[child].insert(pair.value[1..].to_vec());
        }
    }
    for run in runs {
        std::fs::remove_file(run.path)?;
    }
    Ok(())
}
