//! The plan: what `connector.mapping.fastpath.fastpath_plan` hands to `Core`, as JSON, for one
//! topic. `connector._fastpath.validate_plan` knows the same fields and refuses any other
//! before the plan gets here; serde refuses them again here, except beside a variant without
//! fields (`{"kind":"string"}`), which serde's internally tagged enums do not check.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;

use crate::row::push_json_str;

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Conv {
    String,
    Boolean,
    Integer {
        lo: i64,
        hi: i64,
    },
    Enum {
        symbols: HashSet<String>,
    },
    /// Debezium's precise mode at the schema's own scale (at most 6): base64 of the unscaled
    /// integer.
    Decimal {
        scale: u32,
        precision: u32,
    },
    /// Days since the epoch.
    Date,
    Timestamp {
        divisor: i64,
        millis: bool,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Seg {
    Lit(String),
    Col(String),
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Source {
    /// The constant's stored form as JSON text (made by the plan builder with orjson).
    Const { json: String },
    Column {
        column: String,
        path: Vec<String>,
        conv: Conv,
        enum_map: Option<HashMap<String, String>>,
    },
    Template {
        segments: Vec<Seg>,
        columns: Vec<String>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    pub name: String,
    pub source: Source,
    /// What a null or absent source gives, as JSON text (the default, converted, or `null`
    /// for a nullable field); absent: the Python path decides (an error, or a default that
    /// fails).
    pub on_null: Option<String>,
    /// `,"<name>":`, the field's lead-in in the encoded row.
    #[serde(skip)]
    pub lead: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    pub entity: String,
    pub entity_id: Vec<Seg>,
    pub fields: Vec<Field>,
    /// The entity's mapping version, which every row of the table carries (`"mv"`).
    pub mapping_version: Option<String>,
    /// Whether each row keeps its source columns (`"src"`, `row::source_text`).
    #[serde(default)]
    pub source_columns: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub tables: HashMap<String, Table>,
}

impl Plan {
    /// The plan from its JSON text, each field's lead-in in the encoded row computed.
    pub fn parse(text: &str) -> Result<Plan, String> {
        let mut plan: Plan = serde_json::from_str(text).map_err(|e| format!("fast path plan: {e}"))?;
        for table in plan.tables.values_mut() {
            for field in &mut table.fields {
                let mut lead = vec![b','];
                push_json_str(&mut lead, &field.name);
                lead.push(b':');
                field.lead = String::from_utf8(lead).map_err(|e| e.to_string())?;
            }
        }
        Ok(plan)
    }
}
