//! The compiled fast path of the ingest's decode-and-map step, for Debezium JSON messages,
//! with or without their embedded schema (docs/decisions/0012; the schema: `connect`).
//!
//! The Python path (`connector.source.debezium` + `connector.mapping.mapper`) is the
//! reference. This path handles the common, valid message exactly as it does and *declines*
//! everything else — an unchanged-TOAST placeholder anywhere in the bytes, any value a
//! converter would refuse, any shape or logical type it does not know — by returning
//! `None`; the caller then runs the Python path, which maps the message or names its problem
//! (dead letter). So this code never decides that input is bad, and never needs to phrase an
//! error: a decline costs one wasted parse, a wrong answer would corrupt state. The
//! equivalence tests (tests/unit/mapping/test_fastpath.py) hold the two paths to the same bytes.
//!
//! An upsert comes out as its state key and its state row, byte for byte as
//! `connector.state.codec` writes them (`state_key`, `encode_row`) for a row with no stored
//! predecessor; `peek` reads the head of a stored row, so the common update (a newer complete
//! version over a plain stored row) needs no Python work on the values at all.
//!
//! The modules, by concern: `contract` (the version the Python side checks at start-up),
//! `plan` (what a topic's mapping compiles to), `convert` (a value to its stored form),
//! `version` (a change's version from the source block), `row` (the state row's layout, for
//! the ingest and the snapshot alike), `ingest` (the entry point: `Core`, `peek`); `json` and
//! `connect` read messages and their schemas. The snapshot's cut reader: `sort` (the external
//! sort and merge of the state's records), `cut` (the survey), `snapshot` (its Python
//! classes), `csv` and `digest` (the delivered files).

mod connect;
mod contract;
mod convert;
mod csv;
mod cut;
mod digest;
mod ingest;
mod json;
mod plan;
mod row;
mod snapshot;
mod sort;
mod version;

use pyo3::prelude::*;

#[pymodule]
fn carecloud_fastpath(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("CONTRACT_VERSION", contract::CONTRACT_VERSION)?;
    m.add_class::<ingest::Core>()?;
    m.add_function(wrap_pyfunction!(ingest::peek, m)?)?;
    m.add_class::<snapshot::CutSpill>()?;
    m.add_class::<snapshot::Rows>()?;
    m.add_class::<snapshot::CsvRows>()?;
    m.add_function(wrap_pyfunction!(snapshot::digest_diff, m)?)?;
    Ok(())
}
