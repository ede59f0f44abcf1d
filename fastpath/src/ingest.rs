//! The ingest's entry point: `Core(plan, markers).map(key, value, offset)` maps one Debezium
//! JSON message to its state key and state row, or declines it (`None`: the Python path maps
//! it); `peek` reads a stored row's version for the common update.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use memchr::memmem;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};

use crate::connect::{self, Kinds, SchemaCache};
use crate::convert::{absent, converted, int_of, logical_value, Decline, Out, R};
use crate::json::{self, J};
use crate::plan::{Conv, Field, Plan, Seg, Source, Table};
use crate::row;
use crate::version::{mysql_version, postgres_phase, postgres_version};

struct Mapped<'a> {
    table: &'a Table,
    entity_id: String,
    deleted: bool,
    version: [i128; 5],
    values: Vec<(&'a Field, Out<'a>)>,
    /// `(table, transaction.id, data_collection_order)` when the event carries Debezium's
    /// transaction block (the ingest's transaction ledger reads it).
    transaction: Option<(String, String, i64)>,
    /// The row's source columns (`row::source_text`) when its table keeps them.
    source: Option<String>,
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

/// The transaction block's `(id, data_collection_order)`, `None` without one; declines a
/// block the Python path would refuse (or an order beyond 64 bits).
fn check_transaction(doc: &J) -> R<Option<(String, i64)>> {
    match doc.get("transaction") {
        None | Some(J::Null) => Ok(None),
        Some(t @ J::Obj(_)) => {
            let id = t.get("id").and_then(J::as_str).ok_or(Decline)?;
            int_of(t.get("total_order").ok_or(Decline)?)?;
            let order = int_of(t.get("data_collection_order").ok_or(Decline)?)?;
            let order = i64::try_from(order).map_err(|_| Decline)?;
            Ok(Some((id.to_string(), order)))
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
    generation: u64,
    schemas: &Schemas,
) -> R<Mapped<'a>> {
    let doc_pairs = object(doc)?;
    let key_pairs = object(key)?;
    if is_wrapped(doc) || is_wrapped(key) || doc_pairs.is_empty() {
        return Err(Decline);
    }
    let (deleted, read) = match doc.get("op").and_then(J::as_str) {
        Some("c" | "u") => (false, false),
        Some("r") => (false, true),
        Some("d") => (true, false),
        _ => return Err(Decline),
    };
    let source = doc.get("source").ok_or(Decline)?;
    object(source)?;
    let snapshot = if read {
        source.get("snapshot").and_then(J::as_str)
    } else {
        None
    };
    if snapshot == Some("last") {
        return Err(Decline); // the snapshot's completion: the Python path records it
    }
    let initial = read && snapshot != Some("incremental");
    let (table_name, version) = match source.get("connector").and_then(J::as_str) {
        Some("postgresql") => (
            table_name(source, "schema")?,
            postgres_phase(postgres_version(source, 0)?, initial, generation)?,
        ),
        Some("mysql") => (
            table_name(source, "db")?,
            mysql_version(
                source,
                if initial {
                    0
                } else {
                    2 * i128::from(generation) + 1
                },
            )?,
        ),
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
    let transaction = check_transaction(doc)?;
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
    let source = if table.source_columns && !deleted {
        // Typed (logical) columns as the Python decoder types them, tagged; a kind not followed
        // there declines, and the Python path writes that row.
        Some(row::source_text(&table_name, row, kinds).ok_or(Decline)?)
    } else {
        None
    };
    Ok(Mapped {
        table,
        entity_id,
        deleted,
        version,
        values,
        transaction: transaction.map(|(id, order)| (table_name, id, order)),
        source,
    })
}

/// The state row of an upsert over no stored row (`row::encode`).
fn encode_row(m: &Mapped) -> Vec<u8> {
    row::encode(
        &m.version,
        &m.entity_id,
        m.values.iter().map(|(field, value)| (field.lead.as_str(), value)),
        m.source.as_deref(),
        m.table.mapping_version.as_deref(),
    )
}

/// The version of a stored row that is a live, complete entity with no older-filled fields
/// and no delete floor (`row::plain_version`); ``None`` for any other row (the caller parses
/// it).
#[pyfunction]
pub fn peek(py: Python<'_>, raw: &[u8]) -> PyResult<Option<Py<PyTuple>>> {
    match row::plain_version(raw) {
        Some(version) => Ok(Some(PyTuple::new(py, version)?.unbind())),
        None => Ok(None),
    }
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

/// One topic's compiled mapping: ``Core(plan_json, markers).map(key, value, offset, generation)``,
/// ``generation`` the snapshot generation of the message's source partition.
#[pyclass(frozen, module = "carecloud_fastpath")]
pub struct Core {
    tables: HashMap<String, Table>,
    markers: Vec<memmem::Finder<'static>>,
    entity_names: HashMap<String, Py<PyString>>,
    schemas: SchemaCache,
}

#[pymethods]
impl Core {
    #[new]
    fn new(py: Python<'_>, plan: &str, markers: Vec<Vec<u8>>) -> PyResult<Self> {
        let plan = Plan::parse(plan).map_err(PyValueError::new_err)?;
        let mut entity_names = HashMap::new();
        for table in plan.tables.values() {
            entity_names.insert(table.entity.clone(), PyString::intern(py, &table.entity).unbind());
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

    /// ``(entity, entity_id, deleted, version, key, row, transaction)`` or ``None`` (the
    /// Python path decides): ``key`` is the state key, ``row`` the encoded state row of an
    /// upsert over no stored row (``None`` for a delete), ``transaction`` ``(table,
    /// transaction.id, data_collection_order)`` of an event with a transaction block, else
    /// ``None``.
    fn map<'py>(
        &self,
        py: Python<'py>,
        key: &[u8],
        value: &[u8],
        offset: i64,
        generation: u64,
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
        let Ok(m) = map_message(&self.tables, &doc, &key, offset, generation, &schemas) else {
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
                match &m.transaction {
                    Some((table, id, order)) => (table, id, *order).into_pyobject(py)?.into_any(),
                    None => py.None().into_bound(py),
                },
            ],
        )?))
    }
}
