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
use std::io::{self, BufReader, BufWriter, ErrorKind, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

use crate::json::Scalar;
use crate::row::{self, is_complete};
use crate::sort::{read_into, Merge, Rec, Run, Sorter, INDEX_EVERY};
use crate::version::predates;

/// Whether a live row is swept: its version predates the generation of a completed snapshot
/// of its source that did not read it (`connector.state.sweep`).
pub fn swept(row: &[u8], generation: Option<i128>) -> bool {
    generation
        .is_some_and(|g| !row::is_deleted(row) && row::head_version(row).is_some_and(|v| predates(&v, g)))
}

/// An entity's complete rows, in EntityId order, read from its range of every run.
pub struct Scan {
    merge: Merge,
    rec: Rec,
    skip: usize,
    sweep: Option<i128>,
}

impl Scan {
    pub fn open(runs: &[Run], entity: &str, sweep: Option<i128>) -> io::Result<Scan> {
        let mut prefix = entity.as_bytes().to_vec();
        prefix.push(b'/');
        Ok(Scan {
            skip: prefix.len(),
            merge: Merge::open(runs, &prefix)?,
            rec: Rec::default(),
            sweep,
        })
    }

    /// `(EntityId, row)` of the next complete row that is not swept.
    pub fn next(&mut self) -> io::Result<Option<(&[u8], &[u8])>> {
        while self.merge.next_key(&mut self.rec)? {
            if is_complete(&self.rec.value) && !swept(&self.rec.value, self.sweep) {
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
    /// Live rows swept (`swept`): not counted, not present, not delivered.
    pub swept: u64,
    /// Complete rows per mapping version (`row::mapping_version`; `None`: a row without one).
    pub versions: HashMap<Option<Vec<u8>>, u64>,
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
                swept: 0,
                versions: HashMap::new(),
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
    sweep: &HashMap<String, i128>,
) -> io::Result<Survey> {
    let next = AtomicUsize::new(0);
    let done: Vec<io::Result<Surveyed>> = std::thread::scope(|scope| {
        let workers: Vec<_> = ["pairs-a", "pairs-b"]
            .into_iter()
            .map(|tag| {
                let pairs = Sorter::new(dir, tag, budget / PAIR_SHARE);
                scope.spawn(|| survey_entities(&runs, dir, order, links, pairs, &next, sweep))
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
    sweep: &HashMap<String, i128>,
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
        let generation = sweep.get(entity).copied();
        while merge.next_key(&mut rec)? {
            let id = &rec.key[prefix.len()..];
            if swept(&rec.value, generation) {
                writer.ids.swept += 1;
                continue;
            }
            if !is_complete(&rec.value) {
                if !row::is_deleted(&rec.value) {
                    writer
                        .ids
                        .incomplete
                        .push(String::from_utf8_lossy(id).into_owned());
                }
                continue;
            }
            writer.write(id)?;
            let version = row::mapping_version(&rec.value).map(<[u8]>::to_vec);
            *writer.ids.versions.entry(version).or_insert(0) += 1;
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
    let values = row::values(row)?;
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
