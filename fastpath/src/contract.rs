//! The contract between this extension and the Python package that loads it
//! (`connector._fastpath`, the one module that imports it).
//!
//! `CONTRACT_VERSION` names the interface the Python side was written against: the plan's
//! fields (`plan`), what `Core.map` and `peek` return, the state row's layout (`row`), and
//! the classes and functions of the snapshot (`CutSpill`, `Rows`, `CsvRows`, `digest_diff`)
//! with their arguments. Any change to one of them raises it here and in
//! `connector/_fastpath.py` together (a unit test holds the two numbers equal). At start-up
//! the Python side refuses an extension whose number differs, or that has none (built before
//! the handshake): an extension built from older sources, with a message naming `make venv`.

/// The version of the contract this build implements.
/// 3: `Core.map(key, value, offset, generation)`, the snapshot generation of the message's
/// source partition (docs/decisions/0019). 4: `CutSpill.sweep` and `CutSpill.swept`.
/// 5: the plan's tables carry `mapping_version`, which the encoded row ends with (`"mv"`), and
/// `CutSpill.mapping_versions` (docs/decisions/0023). 6: the plan's tables carry
/// `source_columns`, and the encoded row then keeps the source row as `"src"` before `"mv"`
/// (docs/decisions/0025). 7: a PostgreSQL position whose last commit is null carries 1 as its
/// row (`version::NO_LAST_COMMIT`), which `predates` never sweeps (docs/decisions/0019).
pub const CONTRACT_VERSION: u32 = 7;
