//! Python bindings of the snapshot's compiled reader (`cut`) and CSV writer (`csv`), used by
//! `connector.snapshot.compiled_cut` (docs/decisions/0013). The heavy work runs without the GIL, so
//! the compressing threads keep the second core busy meanwhile.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::PathBuf;
use std::ptr;
use std::sync::Arc;

use pyo3::exceptions::{PyKeyError, PyOSError, PyRuntimeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use crate::csv::{self, Column};
use crate::cut::{self, Links, Scan, Survey};
use crate::digest;
use crate::row;
use crate::sort::Sorter;

fn os_error(e: io::Error) -> PyErr {
    PyOSError::new_err(format!("snapshot spill: {e}"))
}

/// The cut's records, sorted on disk: ``absorb`` batches of consumed messages, ``finish``
/// once, then ask for counts, incomplete rows, orphan candidates, rows and CSV.
#[pyclass(module = "carecloud_fastpath")]
pub struct CutSpill {
    dir: PathBuf,
    budget: usize,
    sorter: Option<Sorter>,
    seq: u64,
    #[pyo3(get)]
    records_read: u64,
    survey: Option<Arc<Survey>>,
    /// Records under the reserved ``~`` keys (the transaction ledger), the later per key: kept
    /// out of the sort, which holds entities only.
    reserved: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Per entity, the generation its rows must not predate (``sweep``).
    sweep: HashMap<String, i128>,
}

impl CutSpill {
    fn survey(&self) -> PyResult<&Arc<Survey>> {
        self.survey
            .as_ref()
            .ok_or_else(|| PyRuntimeError::new_err("the spill is not finished"))
    }
}

#[pymethods]
impl CutSpill {
    #[new]
    fn new(dir: &str, budget: usize) -> Self {
        let dir = PathBuf::from(dir);
        CutSpill {
            sorter: Some(Sorter::new(&dir, "state", budget)),
            dir,
            budget,
            seq: 0,
            records_read: 0,
            survey: None,
            reserved: BTreeMap::new(),
            sweep: HashMap::new(),
        }
    }

    /// Take the records of one ``consume()`` batch that lie before the cut (``ends``: the
    /// exclusive end offset of each partition still being read); returns the messages that
    /// carry an error, for the caller to judge. Tombstones are skipped: a tombstone follows
    /// its delete marker, which already outranks the rows.
    fn absorb<'py>(
        &mut self,
        py: Python<'py>,
        messages: &Bound<'py, PyList>,
        ends: &Bound<'py, PyDict>,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let sorter = self
            .sorter
            .as_mut()
            .ok_or_else(|| PyRuntimeError::new_err("the spill is finished"))?;
        let mut errors = Vec::new();
        let Some(first) = messages.iter().next() else {
            return Ok(errors);
        };
        // The methods' descriptors, called directly: a method call by name looks the method up
        // on every call and cost twice what the Python loop pays (measured).
        let kind = first.get_type();
        let [error, partition, offset, key, value] =
            ["error", "partition", "offset", "key", "value"].map(|name| kind.getattr(name));
        let (error, partition, offset, key, value) = (error?, partition?, offset?, key?, value?);
        let ends: Vec<(i64, i64)> = ends
            .iter()
            .map(|(p, end)| Ok((p.extract()?, end.extract()?)))
            .collect::<PyResult<_>>()?;
        for message in messages.iter() {
            let call = |method: &Bound<'py, PyAny>| {
                let args = [message.as_ptr()];
                // SAFETY: a callable and one live argument; the result is a new reference or NULL.
                unsafe {
                    Bound::from_owned_ptr_or_err(
                        py,
                        ffi::PyObject_Vectorcall(method.as_ptr(), args.as_ptr(), 1, ptr::null_mut()),
                    )
                }
            };
            if !call(&error)?.is_none() {
                errors.push(message);
                continue;
            }
            let p: i64 = call(&partition)?.extract()?;
            let Some(&(_, end)) = ends.iter().find(|(q, _)| *q == p) else {
                continue;
            };
            if call(&offset)?.extract::<i64>()? >= end {
                continue;
            }
            let (k, v) = (call(&key)?, call(&value)?);
            if let Ok(k) = k.downcast::<PyBytes>() {
                if k.as_bytes().first() == Some(&b'~') {
                    // A ledger key lives in one partition, read in order: the later record
                    // wins, and a tombstone (the purge) removes it, compacted or not.
                    match v.downcast::<PyBytes>() {
                        Ok(v) => {
                            self.reserved.insert(k.as_bytes().to_vec(), v.as_bytes().to_vec());
                            self.records_read += 1;
                        }
                        Err(_) => {
                            self.reserved.remove(k.as_bytes());
                        }
                    }
                    continue;
                }
            }
            let (Ok(k), Ok(v)) = (k.downcast::<PyBytes>(), v.downcast::<PyBytes>()) else {
                continue; // a tombstone (None), or no key
            };
            sorter
                .push(k.as_bytes(), &row::without_source(v.as_bytes()), self.seq)
                .map_err(os_error)?;
            self.seq += 1;
            self.records_read += 1;
        }
        Ok(errors)
    }

    /// Merge the records into one file per entity and find the orphan candidates. ``order``:
    /// the entity names, parents first; ``links``: per entity, ``(field, parent rank)``.
    fn finish(
        &mut self,
        py: Python<'_>,
        order: Vec<String>,
        links: Vec<Vec<(String, usize)>>,
    ) -> PyResult<()> {
        let sorter = self
            .sorter
            .take()
            .ok_or_else(|| PyRuntimeError::new_err("the spill is finished"))?;
        if links.len() != order.len() || links.iter().flatten().any(|(_, p)| *p >= order.len()) {
            return Err(PyValueError::new_err(
                "links must name a parent rank per field, one list per entity",
            ));
        }
        let links: Vec<Links> = links.into_iter().map(|fields| Links { fields }).collect();
        let (dir, budget, sweep) = (self.dir.clone(), self.budget, self.sweep.clone());
        let survey = py
            .allow_threads(|| {
                sorter
                    .finish()
                    .and_then(|runs| cut::survey(runs, &dir, &order, &links, budget, &sweep))
            })
            .map_err(os_error)?;
        self.survey = Some(Arc::new(survey));
        Ok(())
    }

    /// ``(key, value)`` of the reserved (``~``) records below the cut, the later per key, in
    /// key order: the transaction ledger (``connector.state.ledger``).
    fn reserved<'py>(&self, py: Python<'py>) -> PyResult<Vec<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)>> {
        Ok(self
            .reserved
            .iter()
            .map(|(k, v)| (PyBytes::new(py, k), PyBytes::new(py, v)))
            .collect())
    }

    /// Sweep, in ``finish`` and every read after it, the live rows of each entity whose version
    /// predates its generation (``{entity: generation}``, ``connector.state.sweep``): they are
    /// not counted, not present and not delivered. Called before ``finish``.
    fn sweep(&mut self, generations: HashMap<String, u64>) -> PyResult<()> {
        if self.survey.is_some() {
            return Err(PyRuntimeError::new_err(
                "the sweep is set before the spill is finished",
            ));
        }
        self.sweep = generations.into_iter().map(|(e, g)| (e, i128::from(g))).collect();
        Ok(())
    }

    /// Live rows of ``entity`` the sweep took out.
    fn swept(&self, entity: &str) -> PyResult<u64> {
        Ok(self.survey()?.entities.get(entity).map_or(0, |e| e.swept))
    }

    /// Complete rows of ``entity``.
    fn count(&self, entity: &str) -> PyResult<u64> {
        Ok(self.survey()?.entities.get(entity).map_or(0, |e| e.count))
    }

    /// Complete rows of ``entity`` per mapping version (``None``: rows without one), counted
    /// by the survey (``CompiledStateReader.mapping_versions``).
    fn mapping_versions(&self, entity: &str) -> PyResult<HashMap<Option<String>, u64>> {
        let survey = self.survey()?;
        let Some(ids) = survey.entities.get(entity) else {
            return Ok(HashMap::new());
        };
        Ok(ids
            .versions
            .iter()
            .map(|(v, n)| (v.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()), *n))
            .collect())
    }

    /// EntityIds of live rows missing an unchanged-TOAST value, in EntityId order.
    fn incomplete(&self, entity: &str) -> PyResult<Vec<String>> {
        Ok(self
            .survey()?
            .entities
            .get(entity)
            .map_or_else(Vec::new, |e| e.incomplete.clone()))
    }

    /// Whether ``entity`` has a complete row with this EntityId.
    fn contains(&self, py: Python<'_>, entity: &str, entity_id: &str) -> PyResult<bool> {
        let survey = self.survey()?;
        match survey.entities.get(entity) {
            Some(ids) => py
                .allow_threads(|| ids.contains(entity_id.as_bytes()))
                .map_err(os_error),
            None => Ok(false),
        }
    }

    /// ``(EntityId, row)`` of the complete rows, in EntityId order; with ``candidates``, only
    /// the rows that may be orphans (``rank``: the entity's place in the ``finish`` order).
    #[pyo3(signature = (entity, candidates=None))]
    fn rows(&self, entity: &str, candidates: Option<usize>) -> PyResult<Rows> {
        let survey = self.survey()?;
        let only = match candidates {
            Some(rank) => Some(
                survey
                    .candidates
                    .get(rank)
                    .cloned()
                    .ok_or_else(|| PyKeyError::new_err(rank))?,
            ),
            None => None,
        };
        if only.as_ref().is_some_and(HashSet::is_empty) {
            return Ok(Rows { scan: None, only }); // no candidate: nothing to read
        }
        let scan = Scan::open(&survey.runs, entity, self.sweep.get(entity).copied()).map_err(os_error)?;
        Ok(Rows {
            scan: Some(scan),
            only,
        })
    }

    /// Write the digest of the records ``entity`` delivers (complete rows minus ``held_out``) to
    /// ``path``: ``(EntityId, content hash)`` in EntityId order (``src/digest.rs``); returns the
    /// records written. A row whose values cannot be read as scalars is a ``ValueError`` naming
    /// the entity only (the CSV writer would hand it to Python, which refuses it too).
    fn digest(
        &self,
        py: Python<'_>,
        entity: &str,
        fields: Vec<String>,
        held_out: HashSet<String>,
        path: &str,
    ) -> PyResult<u64> {
        let Rows { scan, .. } = self.rows(entity, None)?;
        let held_out: HashSet<Vec<u8>> = held_out.into_iter().map(String::into_bytes).collect();
        let path = PathBuf::from(path);
        py.allow_threads(|| -> PyResult<u64> {
            let mut out = digest::Writer::create(&path).map_err(os_error)?;
            if let Some(mut scan) = scan {
                while let Some((id, row)) = scan.next().map_err(os_error)? {
                    if !held_out.is_empty() && held_out.contains(id) {
                        continue;
                    }
                    let pairs = row::values(row).ok_or_else(|| {
                        PyValueError::new_err(format!("{entity}: a stored row whose values are not scalars"))
                    })?;
                    out.push(id, &digest::content_hash(&fields, &pairs))
                        .map_err(os_error)?;
                }
            }
            out.finish().map_err(os_error)
        })
    }

    /// The entity's CSV lines, without a header, skipping ``held_out``: ``bytes`` of about
    /// ``chunk`` bytes, or ``(record number, row)`` for a row the Python writer must format.
    fn csv(&self, entity: &str, columns: &str, held_out: HashSet<String>, chunk: usize) -> PyResult<CsvRows> {
        let columns: Vec<Column> =
            serde_json::from_str(columns).map_err(|e| PyValueError::new_err(format!("csv columns: {e}")))?;
        let Rows { scan, .. } = self.rows(entity, None)?;
        Ok(CsvRows {
            scan,
            columns,
            held_out: held_out.into_iter().map(String::into_bytes).collect(),
            chunk,
            number: 0,
            declined: None,
        })
    }
}

#[pyclass(module = "carecloud_fastpath")]
pub struct Rows {
    scan: Option<Scan>,
    only: Option<HashSet<Vec<u8>>>,
}

#[pymethods]
impl Rows {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let Some(scan) = self.scan.as_mut() else {
            return Ok(None);
        };
        while let Some((id, row)) = scan.next().map_err(os_error)? {
            if self.only.as_ref().is_some_and(|only| !only.contains(id)) {
                continue;
            }
            let id = std::str::from_utf8(id)
                .map_err(|_| PyValueError::new_err("an EntityId that is not UTF-8"))?;
            return Ok(Some(PyTuple::new(
                py,
                [id.into_pyobject(py)?.into_any(), PyBytes::new(py, row).into_any()],
            )?));
        }
        Ok(None)
    }
}

enum Step {
    Chunk(Vec<u8>),
    Declined(u64, Vec<u8>),
    End,
}

#[pyclass(module = "carecloud_fastpath")]
pub struct CsvRows {
    scan: Option<Scan>,
    columns: Vec<Column>,
    held_out: HashSet<Vec<u8>>,
    chunk: usize,
    number: u64,
    declined: Option<(u64, Vec<u8>)>,
}

impl CsvRows {
    fn step(&mut self) -> io::Result<Step> {
        if let Some((number, row)) = self.declined.take() {
            return Ok(Step::Declined(number, row));
        }
        let Some(scan) = self.scan.as_mut() else {
            return Ok(Step::End);
        };
        let mut out = Vec::with_capacity(self.chunk + (64 << 10));
        while let Some((id, row)) = scan.next()? {
            if !self.held_out.is_empty() && self.held_out.contains(id) {
                continue;
            }
            self.number += 1;
            if !csv::row(&self.columns, row, &mut out) {
                if out.is_empty() {
                    return Ok(Step::Declined(self.number, row.to_vec()));
                }
                self.declined = Some((self.number, row.to_vec()));
                return Ok(Step::Chunk(out));
            }
            if out.len() >= self.chunk {
                return Ok(Step::Chunk(out));
            }
        }
        self.scan = None;
        Ok(if out.is_empty() {
            Step::End
        } else {
            Step::Chunk(out)
        })
    }
}

#[pymethods]
impl CsvRows {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        match py.allow_threads(|| self.step()).map_err(os_error)? {
            Step::Chunk(out) => Ok(Some(PyBytes::new(py, &out).into_any())),
            Step::Declined(number, row) => Ok(Some(
                PyTuple::new(
                    py,
                    [
                        number.into_pyobject(py)?.into_any(),
                        PyBytes::new(py, &row).into_any(),
                    ],
                )?
                .into_any(),
            )),
            Step::End => Ok(None),
        }
    }
}

/// What changed between two digest files: ``(added, removed, changed, unchanged)``.
#[pyfunction]
pub fn digest_diff(py: Python<'_>, previous: &str, current: &str) -> PyResult<(u64, u64, u64, u64)> {
    let (previous, current) = (PathBuf::from(previous), PathBuf::from(current));
    let [a, r, c, u] = py
        .allow_threads(|| digest::diff(&previous, &current))
        .map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData => PyValueError::new_err(format!("digest: {e}")),
            io::ErrorKind::UnexpectedEof => PyValueError::new_err("digest: a truncated digest record"),
            _ => os_error(e),
        })?;
    Ok((a, r, c, u))
}
