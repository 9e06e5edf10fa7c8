//! What `plugin test` prints: the affected keys as an aligned table or as JSON.

use deltalake::arrow::array::{ArrayRef, AsArray};
use deltalake::arrow::datatypes::{DataType, Int32Type, Int64Type};
use dlink_rt::affected::AffectedKeys;

/// One value of a key, ordered: numbers by value, strings by bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum KeyValue {
    Int(i64),
    Str(String),
}

impl KeyValue {
    pub(super) fn text(&self) -> String {
        match self {
            KeyValue::Int(v) => v.to_string(),
            KeyValue::Str(s) => s.clone(),
        }
    }

    pub(super) fn json(&self) -> serde_json::Value {
        match self {
            KeyValue::Int(v) => (*v).into(),
            KeyValue::Str(s) => s.clone().into(),
        }
    }
}

/// One affected key with its causes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct KeyRow {
    pub(super) key: Vec<KeyValue>,
    pub(super) upstreams: Vec<String>,
    pub(super) change_ts: Option<i64>,
}

/// The printed columns besides the keys: the link table's names for the same things.
pub(super) const UPSTREAMS_COLUMN: &str = "dlink_upstreams";
pub(super) const CHANGE_TS_COLUMN: &str = "dlink_change_ts";

pub(super) fn key_rows(keys: &AffectedKeys) -> Result<Vec<KeyRow>, String> {
    let mut rows: Vec<KeyRow> = (0..keys.len())
        .map(|i| KeyRow {
            key: Vec::with_capacity(keys.columns.len()),
            upstreams: keys.upstreams[i].to_vec(),
            change_ts: keys.change_ts[i],
        })
        .collect();
    for col in &keys.columns {
        let values = values_of(col)?;
        for (row, v) in rows.iter_mut().zip(values) {
            row.key.push(v);
        }
    }
    rows.sort();
    Ok(rows)
}

pub(super) fn values_of(col: &ArrayRef) -> Result<Vec<KeyValue>, String> {
    Ok(match col.data_type() {
        DataType::Int64 => col
            .as_primitive::<Int64Type>()
            .values()
            .iter()
            .map(|v| KeyValue::Int(*v))
            .collect(),
        DataType::Int32 => col
            .as_primitive::<Int32Type>()
            .values()
            .iter()
            .map(|v| KeyValue::Int(i64::from(*v)))
            .collect(),
        DataType::Utf8 => col
            .as_string::<i32>()
            .iter()
            .map(|v| KeyValue::Str(v.unwrap_or_default().to_string()))
            .collect(),
        other => return Err(format!("a key column of type {other} cannot be printed")),
    })
}

pub(super) fn format_ts(micros: Option<i64>) -> Option<String> {
    micros
        .and_then(chrono::DateTime::from_timestamp_micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

/// An aligned table: the key columns, `dlink_upstreams`, `dlink_change_ts`.
pub(super) fn render_table(key_names: &[String], rows: &[KeyRow]) -> String {
    let mut cells: Vec<Vec<String>> = vec![key_names
        .iter()
        .cloned()
        .chain([UPSTREAMS_COLUMN.to_string(), CHANGE_TS_COLUMN.to_string()])
        .collect()];
    for r in rows {
        cells.push(
            r.key
                .iter()
                .map(KeyValue::text)
                .chain([
                    r.upstreams.join(","),
                    format_ts(r.change_ts).unwrap_or_else(|| "-".into()),
                ])
                .collect(),
        );
    }
    let widths: Vec<usize> = (0..cells[0].len())
        .map(|c| {
            cells
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in &cells {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A JSON array, one object per key: the key columns, `dlink_upstreams`,
/// `dlink_change_ts` (RFC 3339 or null).
pub(super) fn render_json(key_names: &[String], rows: &[KeyRow]) -> String {
    if rows.is_empty() {
        return "[]\n".into();
    }
    let mut out = String::from("[\n");
    for (i, r) in rows.iter().enumerate() {
        let mut fields: Vec<String> = key_names
            .iter()
            .zip(&r.key)
            .map(|(n, v)| format!("{}: {}", serde_json::Value::from(n.as_str()), v.json()))
            .collect();
        fields.push(format!(
            "\"{UPSTREAMS_COLUMN}\": {}",
            serde_json::Value::from(r.upstreams.clone())
        ));
        fields.push(format!(
            "\"{CHANGE_TS_COLUMN}\": {}",
            format_ts(r.change_ts).map_or(serde_json::Value::Null, serde_json::Value::from)
        ));
        out.push_str(&format!("  {{{}}}", fields.join(", ")));
        out.push_str(if i + 1 < rows.len() { ",\n" } else { "\n" });
    }
    out.push_str("]\n");
    out
}
