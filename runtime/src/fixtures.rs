//! Change rows and tables written by hand, to run a plugin without Delta tables
//! (`dlink-rt plugin test`).
//!
//! A file is JSON (an array of objects, or one object per line) or CSV (a header row,
//! then one row per line). Column types are inferred: integers are `Int64`, other
//! numbers `Float64`, `true`/`false` `Boolean`, everything else `Utf8`; a column with
//! only nulls is `Null`. In CSV an empty unquoted field is null (`""` is the empty
//! string) and a header `name:type` (long, int, string, double, boolean) fixes a type.
//!
//! Change rows ([`read_changes`]) come out in the schema the host sends a plugin
//! ([`crate::cdf::change_schema`]): the table's columns, then `_change_type` (default
//! `insert`), `_commit_version` (default 1) and `_commit_timestamp` (an RFC 3339 time,
//! `YYYY-MM-DD HH:MM:SS` or `YYYY-MM-DD` in UTC; default null). [`MemoryLookup`] answers
//! a plugin's lookups from tables in memory with the same filtering as the Delta lookup
//! ([`crate::sql::answer`]).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, NullArray, RecordBatch,
    RecordBatchOptions, StringArray, TimestampMicrosecondArray,
};
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use deltalake::datafusion::datasource::MemTable;
use deltalake::datafusion::prelude::SessionContext;
use futures::future::BoxFuture;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use crate::cdf::{CHANGE_TYPE, COMMIT_TIMESTAMP, COMMIT_VERSION};
use crate::plugin::Lookup;
use crate::sql::LookupTarget;

/// The four values of `_change_type`.
pub const CHANGE_TYPES: [&str; 4] = ["insert", "update_preimage", "update_postimage", "delete"];

/// `_commit_version` of a change row that gives none.
pub const DEFAULT_COMMIT_VERSION: i64 = 1;

/// A column type a CSV header may fix with `name:type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColType {
    Long,
    Int,
    Double,
    Boolean,
    String,
}

impl ColType {
    const NAMES: &'static str = "long, int, string, double, boolean";

    fn parse(s: &str) -> Option<ColType> {
        Some(match s.to_ascii_lowercase().as_str() {
            "long" => ColType::Long,
            "int" => ColType::Int,
            "double" => ColType::Double,
            "boolean" => ColType::Boolean,
            "string" => ColType::String,
            _ => return None,
        })
    }

    fn data_type(self) -> DataType {
        match self {
            ColType::Long => DataType::Int64,
            ColType::Int => DataType::Int32,
            ColType::Double => DataType::Float64,
            ColType::Boolean => DataType::Boolean,
            ColType::String => DataType::Utf8,
        }
    }

    fn name(self) -> &'static str {
        match self {
            ColType::Long => "long",
            ColType::Int => "int",
            ColType::Double => "double",
            ColType::Boolean => "boolean",
            ColType::String => "string",
        }
    }
}

/// One value as read from a file.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// A JSON string.
    Str(String),
    /// A CSV field: text whose type is inferred per column.
    Text(String),
}

impl Cell {
    fn kind(&self) -> &'static str {
        match self {
            Cell::Null => "null",
            Cell::Bool(_) => "a boolean",
            Cell::Int(_) | Cell::Float(_) => "a number",
            Cell::Str(_) | Cell::Text(_) => "a string",
        }
    }

    fn text(&self) -> String {
        match self {
            Cell::Null => String::new(),
            Cell::Bool(b) => b.to_string(),
            Cell::Int(v) => v.to_string(),
            Cell::Float(v) => v.to_string(),
            Cell::Str(s) | Cell::Text(s) => s.clone(),
        }
    }
}

/// A column of a file, before typing.
#[derive(Debug)]
struct RawColumn {
    name: String,
    declared: Option<ColType>,
    cells: Vec<Cell>,
}

/// The rows of a file, before typing: columns in file order, the line of each row.
#[derive(Debug)]
struct Raw {
    /// The file as named in errors.
    file: String,
    lines: Vec<usize>,
    columns: Vec<RawColumn>,
}

impl Raw {
    fn take(&mut self, name: &str) -> Option<RawColumn> {
        let i = self.columns.iter().position(|c| c.name == name)?;
        Some(self.columns.remove(i))
    }

    fn at(&self, row: usize) -> String {
        format!(
            "{}:{}",
            self.file,
            self.lines.get(row).copied().unwrap_or(0)
        )
    }
}

/// The file formats [`read_table`] and [`read_changes`] understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

impl Format {
    /// By extension (`.json`, `.jsonl`, `.ndjson`, `.csv`), else by the first character
    /// (`[` or `{` is JSON).
    pub fn of(path: &Path, text: &str) -> Format {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("json" | "jsonl" | "ndjson") => Format::Json,
            Some("csv") => Format::Csv,
            _ if matches!(text.trim_start().chars().next(), Some('[' | '{')) => Format::Json,
            _ => Format::Csv,
        }
    }
}

fn read_raw(path: &Path) -> Result<Raw, String> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| format!("{file}: cannot read the file: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        format!(
            "{file}: not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    match Format::of(path, text) {
        Format::Json => parse_json(file, text),
        Format::Csv => parse_csv(file, text),
    }
}

/// Reads a table's rows (every column is data) with inferred column types.
pub fn read_table(path: &Path) -> Result<RecordBatch, String> {
    let raw = read_raw(path)?;
    let rows = raw.lines.len();
    let mut fields = Vec::with_capacity(raw.columns.len());
    let mut arrays = Vec::with_capacity(raw.columns.len());
    for c in &raw.columns {
        let (ty, array) = typed_column(&raw, c)?;
        fields.push(Field::new(&c.name, ty, true));
        arrays.push(array);
    }
    RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        arrays,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
    .map_err(|e| format!("{}: {e}", raw.file))
}

/// One upstream's change rows read from a file.
#[derive(Debug, Clone)]
pub struct ChangeRows {
    /// In the host's change schema: the file's columns, `_change_type`,
    /// `_commit_version`, `_commit_timestamp`.
    pub batch: RecordBatch,
    /// The smallest and largest `_commit_version`; `None` without rows.
    pub versions: Option<(i64, i64)>,
    /// Things that are probably mistakes but do not stop the run.
    pub warnings: Vec<String>,
}

/// Reads the change rows of upstream `upstream` from a file: its columns plus the
/// three CDF columns, defaulted when absent (see the module documentation).
pub fn read_changes(upstream: &str, path: &Path) -> Result<ChangeRows, String> {
    let mut raw = read_raw(path)?;
    let rows = raw.lines.len();
    let change_type = raw.take(CHANGE_TYPE);
    let version = raw.take(COMMIT_VERSION);
    let timestamp = raw.take(COMMIT_TIMESTAMP);

    let mut types = Vec::with_capacity(rows);
    for i in 0..rows {
        let t = match change_type.as_ref().map(|c| &c.cells[i]) {
            None | Some(Cell::Null) => "insert",
            Some(Cell::Str(s) | Cell::Text(s)) => CHANGE_TYPES
                .iter()
                .find(|t| **t == s.as_str())
                .ok_or_else(|| {
                format!(
                    "{}: {CHANGE_TYPE} '{s}' is not one of {}",
                    raw.at(i),
                    CHANGE_TYPES.join(", ")
                )
            })?,
            Some(other) => {
                return Err(format!(
                    "{}: {CHANGE_TYPE} is {}; it is one of {} (default insert)",
                    raw.at(i),
                    other.kind(),
                    CHANGE_TYPES.join(", ")
                ))
            }
        };
        types.push(t);
    }
    let mut versions = Vec::with_capacity(rows);
    for i in 0..rows {
        let v = match version.as_ref().map(|c| &c.cells[i]) {
            None | Some(Cell::Null) => Some(DEFAULT_COMMIT_VERSION),
            Some(Cell::Int(v)) => Some(*v),
            Some(Cell::Text(s)) => s.parse::<i64>().ok(),
            Some(_) => None,
        };
        match v {
            Some(v) if v >= 0 => versions.push(v),
            _ => {
                return Err(format!(
                    "{}: {COMMIT_VERSION} must be a table version (an integer, 0 or more; default {DEFAULT_COMMIT_VERSION}), not '{}'",
                    raw.at(i),
                    version.as_ref().map(|c| c.cells[i].text()).unwrap_or_default()
                ))
            }
        }
    }
    let mut times = Vec::with_capacity(rows);
    for i in 0..rows {
        let t = match timestamp.as_ref().map(|c| &c.cells[i]) {
            None | Some(Cell::Null) => None,
            Some(Cell::Str(s) | Cell::Text(s)) => Some(parse_time(s).ok_or_else(|| {
                format!(
                    "{}: {COMMIT_TIMESTAMP} '{s}' is not a time; write e.g. 2024-05-01T12:00:00Z \
                     (RFC 3339), 2024-05-01 12:00:00 or 2024-05-01 (UTC)",
                    raw.at(i)
                )
            })?),
            Some(other) => {
                return Err(format!(
                    "{}: {COMMIT_TIMESTAMP} is {}; write a time as a string, e.g. \"2024-05-01T12:00:00Z\"",
                    raw.at(i),
                    other.kind()
                ))
            }
        };
        times.push(t);
    }

    let mut fields = Vec::with_capacity(raw.columns.len());
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(raw.columns.len() + 3);
    for c in &raw.columns {
        let (ty, array) = typed_column(&raw, c)?;
        fields.push(Field::new(&c.name, ty, true));
        arrays.push(array);
    }
    let upstream_spec = crate::config::Upstream::new(upstream, raw.file.clone());
    let schema = crate::cdf::change_schema(&upstream_spec, &Schema::new(fields))
        .map_err(|e| format!("{}: {e}", raw.file))?;
    arrays.push(Arc::new(StringArray::from(types.clone())));
    arrays.push(Arc::new(Int64Array::from(versions.clone())));
    arrays.push(Arc::new(
        TimestampMicrosecondArray::from(times).with_timezone("UTC"),
    ));
    let batch = RecordBatch::try_new_with_options(
        schema,
        arrays,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
    .map_err(|e| format!("{}: {e}", raw.file))?;

    // Updates come as pairs: as many pre-images as post-images in each version.
    let mut images: BTreeMap<i64, (usize, usize)> = BTreeMap::new();
    for (t, v) in types.iter().zip(&versions) {
        let e = images.entry(*v).or_default();
        match *t {
            "update_preimage" => e.0 += 1,
            "update_postimage" => e.1 += 1,
            _ => {}
        }
    }
    let warnings = images
        .iter()
        .filter(|(_, (pre, post))| pre != post)
        .map(|(v, (pre, post))| {
            format!(
                "{}: {COMMIT_VERSION} {v} has {pre} update_preimage and {post} update_postimage row(s); \
                 the change feed writes an update as one row of each",
                raw.file
            )
        })
        .collect();
    Ok(ChangeRows {
        batch,
        versions: versions
            .iter()
            .min()
            .copied()
            .zip(versions.iter().max().copied()),
        warnings,
    })
}

/// Microseconds since the epoch of an RFC 3339 time, or of `YYYY-MM-DD[ HH:MM:SS[.f]]`
/// (also with `T`) in UTC.
fn parse_time(s: &str) -> Option<i64> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime};
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_micros());
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc().timestamp_micros());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_micros())
}

/// What a CSV field looks like.
fn classify(s: &str) -> Cell {
    if let Ok(v) = s.parse::<i64>() {
        return Cell::Int(v);
    }
    let numeric = s
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | 'e' | 'E'))
        && s.chars().any(|c| c.is_ascii_digit());
    if numeric {
        if let Ok(v) = s.parse::<f64>() {
            return Cell::Float(v);
        }
    }
    if s.eq_ignore_ascii_case("true") {
        return Cell::Bool(true);
    }
    if s.eq_ignore_ascii_case("false") {
        return Cell::Bool(false);
    }
    Cell::Str(s.to_string())
}

/// The type of a column: declared, or inferred from its non-null values.
fn column_type(raw: &Raw, c: &RawColumn) -> Result<Option<ColType>, String> {
    if c.declared.is_some() {
        return Ok(c.declared);
    }
    let (mut ints, mut floats, mut bools, mut strs) = (false, false, false, false);
    // (kind, row) of the first value, for a mismatch message.
    let mut first: Option<(&'static str, usize)> = None;
    for (i, cell) in c.cells.iter().enumerate() {
        let csv;
        let cell = match cell {
            Cell::Text(s) => {
                csv = classify(s);
                &csv
            }
            other => other,
        };
        match cell {
            Cell::Null => continue,
            Cell::Int(_) => ints = true,
            Cell::Float(_) => floats = true,
            Cell::Bool(_) => bools = true,
            Cell::Str(_) | Cell::Text(_) => strs = true,
        }
        let is_csv = matches!(c.cells[i], Cell::Text(_));
        match first {
            None => first = Some((cell.kind(), i)),
            Some((kind, row)) if !is_csv && kind != cell.kind() => {
                return Err(format!(
                    "{}: column '{}' is {} here but {} on line {}; a column holds one type",
                    raw.at(i),
                    c.name,
                    cell.kind(),
                    kind,
                    raw.lines.get(row).copied().unwrap_or(0)
                ))
            }
            Some(_) => {}
        }
    }
    Ok(match (ints, floats, bools, strs) {
        (false, false, false, false) => None,
        (_, _, _, true) => Some(ColType::String),
        (_, _, true, false) if ints || floats => Some(ColType::String),
        (_, _, true, false) => Some(ColType::Boolean),
        (_, true, false, false) => Some(ColType::Double),
        (true, false, false, false) => Some(ColType::Long),
    })
}

fn typed_column(raw: &Raw, c: &RawColumn) -> Result<(DataType, ArrayRef), String> {
    let Some(ty) = column_type(raw, c)? else {
        return Ok((DataType::Null, Arc::new(NullArray::new(c.cells.len()))));
    };
    let bad = |i: usize, cell: &Cell| {
        format!(
            "{}: column '{}': '{}' is not a {} value",
            raw.at(i),
            c.name,
            cell.text(),
            ty.name()
        )
    };
    let array: ArrayRef = match ty {
        ColType::Long | ColType::Int => {
            let mut values = Vec::with_capacity(c.cells.len());
            for (i, cell) in c.cells.iter().enumerate() {
                values.push(match cell {
                    Cell::Null => None,
                    Cell::Int(v) => Some(*v),
                    Cell::Text(s) => Some(s.trim().parse::<i64>().map_err(|_| bad(i, cell))?),
                    _ => return Err(bad(i, cell)),
                });
            }
            if ty == ColType::Int {
                let mut narrow = Vec::with_capacity(values.len());
                for (i, v) in values.into_iter().enumerate() {
                    narrow.push(match v {
                        None => None,
                        Some(v) => Some(i32::try_from(v).map_err(|_| bad(i, &c.cells[i]))?),
                    });
                }
                Arc::new(Int32Array::from(narrow))
            } else {
                Arc::new(Int64Array::from(values))
            }
        }
        ColType::Double => {
            let mut values = Vec::with_capacity(c.cells.len());
            for (i, cell) in c.cells.iter().enumerate() {
                values.push(match cell {
                    Cell::Null => None,
                    Cell::Int(v) => Some(*v as f64),
                    Cell::Float(v) => Some(*v),
                    Cell::Text(s) => Some(s.trim().parse::<f64>().map_err(|_| bad(i, cell))?),
                    _ => return Err(bad(i, cell)),
                });
            }
            Arc::new(Float64Array::from(values))
        }
        ColType::Boolean => {
            let mut values = Vec::with_capacity(c.cells.len());
            for (i, cell) in c.cells.iter().enumerate() {
                values.push(match cell {
                    Cell::Null => None,
                    Cell::Bool(b) => Some(*b),
                    Cell::Text(s) => match classify(s.trim()) {
                        Cell::Bool(b) => Some(b),
                        _ => return Err(bad(i, cell)),
                    },
                    _ => return Err(bad(i, cell)),
                });
            }
            Arc::new(BooleanArray::from(values))
        }
        ColType::String => Arc::new(StringArray::from(
            c.cells
                .iter()
                .map(|cell| match cell {
                    Cell::Null => None,
                    other => Some(other.text()),
                })
                .collect::<Vec<_>>(),
        )),
    };
    Ok((ty.data_type(), array))
}

/// Byte offset -> line number.
struct LineIndex(Vec<usize>);

impl LineIndex {
    fn new(text: &str) -> Self {
        LineIndex(
            std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect(),
        )
    }

    /// 1-based line of byte `pos`.
    fn line(&self, pos: usize) -> usize {
        self.0.partition_point(|&start| start <= pos)
    }

    /// 1-based column (in bytes) of byte `pos`.
    fn column(&self, pos: usize) -> usize {
        let line = self.line(pos);
        pos - self.0[line - 1] + 1
    }
}

/// A JSON object with its keys in file order.
struct JsonRow(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for JsonRow {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RowVisitor;
        impl<'de> Visitor<'de> for RowVisitor {
            type Value = JsonRow;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object (one row)")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonRow, A::Error> {
                let mut entries: Vec<(String, Value)> = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    if entries.iter().any(|(e, _)| *e == k) {
                        return Err(serde::de::Error::custom(format!(
                            "column '{k}' appears twice in this row"
                        )));
                    }
                    entries.push((k, v));
                }
                Ok(JsonRow(entries))
            }
        }
        d.deserialize_map(RowVisitor)
    }
}

fn skip_ws(text: &str, mut pos: usize) -> usize {
    while let Some(c) = text[pos..].chars().next() {
        if !c.is_whitespace() {
            break;
        }
        pos += c.len_utf8();
    }
    pos
}

fn parse_json(file: String, text: &str) -> Result<Raw, String> {
    let index = LineIndex::new(text);
    // A serde error inside the slice that starts at byte `pos`, as file:line:column.
    let at = |pos: usize, e: serde_json::Error| {
        let (line, column) = if e.line() == 1 {
            (
                index.line(pos),
                index.column(pos) + e.column().saturating_sub(1),
            )
        } else {
            (index.line(pos) + e.line() - 1, e.column())
        };
        let msg = e.to_string();
        let msg = msg
            .rsplit_once(" at line ")
            .map_or(msg.as_str(), |(m, _)| m);
        format!("{file}:{line}:{column}: not valid JSON rows: {msg}")
    };
    let one = |pos: usize| -> Result<(JsonRow, usize), String> {
        let mut it = serde_json::Deserializer::from_str(&text[pos..]).into_iter::<JsonRow>();
        match it.next() {
            Some(Ok(row)) => Ok((row, pos + it.byte_offset())),
            Some(Err(e)) => Err(at(pos, e)),
            None => Err(format!("{file}:{}: expected a row", index.line(pos))),
        }
    };
    let mut rows: Vec<(usize, JsonRow)> = Vec::new();
    let start = skip_ws(text, 0);
    if text[start..].starts_with('[') {
        let mut pos = skip_ws(text, start + 1);
        if text[pos..].starts_with(']') {
            pos += 1;
        } else {
            loop {
                let (row, end) = one(pos)?;
                rows.push((index.line(pos), row));
                pos = skip_ws(text, end);
                match text[pos..].chars().next() {
                    Some(',') => pos = skip_ws(text, pos + 1),
                    Some(']') => {
                        pos += 1;
                        break;
                    }
                    _ => {
                        return Err(format!(
                            "{file}:{}:{}: not valid JSON rows: expected `,` or `]` after a row",
                            index.line(pos),
                            index.column(pos)
                        ))
                    }
                }
            }
        }
        let pos = skip_ws(text, pos);
        if pos < text.len() {
            return Err(format!(
                "{file}:{}: text after the closing `]`",
                index.line(pos)
            ));
        }
    } else {
        // One object per line (JSON lines); an object may also span lines.
        let mut pos = start;
        while pos < text.len() {
            let (row, end) = one(pos)?;
            rows.push((index.line(pos), row));
            pos = skip_ws(text, end);
        }
    }

    let mut raw = Raw {
        file,
        lines: rows.iter().map(|(l, _)| *l).collect(),
        columns: Vec::new(),
    };
    let n = rows.len();
    let mut position: HashMap<String, usize> = HashMap::new();
    for (r, (line, row)) in rows.into_iter().enumerate() {
        for (name, value) in row.0 {
            let cell = match value {
                Value::Null => Cell::Null,
                Value::Bool(b) => Cell::Bool(b),
                Value::Number(num) => match (num.as_i64(), num.as_f64()) {
                    (Some(v), _) => Cell::Int(v),
                    (None, Some(v)) if num.is_f64() => Cell::Float(v),
                    _ => {
                        return Err(format!(
                            "{}:{line}: column '{name}': {num} does not fit in a long",
                            raw.file
                        ))
                    }
                },
                Value::String(s) => Cell::Str(s),
                Value::Array(_) | Value::Object(_) => {
                    return Err(format!(
                        "{}:{line}: column '{name}' holds a nested value; a row's values are \
                         numbers, strings, booleans or null",
                        raw.file
                    ))
                }
            };
            let c = *position.entry(name.clone()).or_insert_with(|| {
                raw.columns.push(RawColumn {
                    name,
                    declared: None,
                    cells: vec![Cell::Null; n],
                });
                raw.columns.len() - 1
            });
            raw.columns[c].cells[r] = cell;
        }
    }
    Ok(raw)
}

/// CSV records (RFC 4180: `,`, `"` quoting with `""` inside, CRLF or LF) with the
/// line each starts on. An empty unquoted field is `None`; blank lines are skipped.
type Record = (usize, Vec<Option<String>>);

fn csv_records(file: &str, text: &str) -> Result<Vec<Record>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while chars.peek().is_some() {
        let start_line = line;
        let mut fields = Vec::new();
        let mut blank = true;
        loop {
            let mut buf = String::new();
            while let Some(&c) = chars.peek() {
                if c == ' ' || c == '\t' {
                    buf.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            let value = if chars.peek() == Some(&'"') {
                chars.next();
                buf.clear();
                loop {
                    match chars.next() {
                        None => {
                            return Err(format!(
                                "{file}:{start_line}: a quoted field is not closed"
                            ))
                        }
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            buf.push('"');
                        }
                        Some('"') => break,
                        Some(c) => {
                            if c == '\n' {
                                line += 1;
                            }
                            buf.push(c);
                        }
                    }
                }
                while matches!(chars.peek(), Some(' ' | '\t')) {
                    chars.next();
                }
                if let Some(&c) = chars.peek() {
                    if !matches!(c, ',' | '\n' | '\r') {
                        return Err(format!(
                            "{file}:{line}: {c:?} after a closing quote; inside a quoted field write a quote as \"\""
                        ));
                    }
                }
                blank = false;
                Some(buf)
            } else {
                while let Some(&c) = chars.peek() {
                    if matches!(c, ',' | '\n' | '\r') {
                        break;
                    }
                    buf.push(c);
                    chars.next();
                }
                let t = buf.trim();
                if t.is_empty() {
                    None
                } else {
                    blank = false;
                    Some(t.to_string())
                }
            };
            fields.push(value);
            match chars.next() {
                Some(',') => blank = false,
                Some('\r') => {
                    if chars.peek() == Some(&'\n') {
                        chars.next();
                    }
                    line += 1;
                    break;
                }
                Some('\n') => {
                    line += 1;
                    break;
                }
                _ => break,
            }
        }
        if !blank {
            out.push((start_line, fields));
        }
    }
    Ok(out)
}

fn parse_csv(file: String, text: &str) -> Result<Raw, String> {
    let records = csv_records(&file, text)?;
    let mut raw = Raw {
        file,
        lines: Vec::new(),
        columns: Vec::new(),
    };
    let Some(((header_line, header), rows)) = records.split_first() else {
        return Ok(raw);
    };
    for (i, h) in header.iter().enumerate() {
        let Some(h) = h.as_deref().filter(|h| !h.is_empty()) else {
            return Err(format!(
                "{}:{header_line}: column {} of the header has no name",
                raw.file,
                i + 1
            ));
        };
        let (name, declared) = match h.rsplit_once(':') {
            Some((name, ty)) => match ColType::parse(ty.trim()) {
                Some(t) => (name.trim().to_string(), Some(t)),
                None => {
                    return Err(format!(
                        "{}:{header_line}: column '{h}': unknown type '{ty}' (name:type with type one of {})",
                        raw.file,
                        ColType::NAMES
                    ))
                }
            },
            None => (h.to_string(), None),
        };
        if raw.columns.iter().any(|c| c.name == name) {
            return Err(format!(
                "{}:{header_line}: column '{name}' is named twice in the header",
                raw.file
            ));
        }
        raw.columns.push(RawColumn {
            name,
            declared,
            cells: Vec::with_capacity(rows.len()),
        });
    }
    for (line, fields) in rows {
        if fields.len() != header.len() {
            return Err(format!(
                "{}:{line}: {} field(s), but the header has {} column(s)",
                raw.file,
                fields.len(),
                header.len()
            ));
        }
        raw.lines.push(*line);
        for (c, f) in raw.columns.iter_mut().zip(fields) {
            c.cells.push(match f {
                None => Cell::Null,
                Some(s) => Cell::Text(s.clone()),
            });
        }
    }
    Ok(raw)
}

/// Answers a plugin's lookups from tables held in memory, with the filtering of the
/// Delta lookup: rows whose column is one of the keys, projected.
pub struct MemoryLookup {
    tables: HashMap<String, LookupTarget>,
    max_rows: u64,
    ctx: SessionContext,
    calls: AtomicUsize,
}

impl MemoryLookup {
    /// No tables yet; a lookup may return at most `max_rows` rows.
    pub fn new(max_rows: u64) -> Self {
        MemoryLookup {
            tables: HashMap::new(),
            max_rows,
            ctx: crate::cdf::session(),
            calls: AtomicUsize::new(0),
        }
    }

    /// Adds (or replaces) table `name` with the rows of `batch`; `source` (e.g. the
    /// file) is named in errors.
    pub fn add(&mut self, name: &str, source: &str, batch: RecordBatch) -> Result<(), String> {
        let schema = batch.schema();
        let provider = MemTable::try_new(schema.clone(), vec![vec![batch]])
            .map_err(|e| format!("table '{name}' ({source}): {e}"))?;
        self.tables.insert(
            name.to_string(),
            LookupTarget {
                name: name.to_string(),
                at: format!(" ({source})"),
                schema,
                provider: Arc::new(provider),
            },
        );
        Ok(())
    }

    /// How many lookups were answered or refused so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }
}

impl Lookup for MemoryLookup {
    fn lookup<'a>(
        &'a self,
        table: &'a str,
        column: &'a str,
        keys: &'a [u8],
        columns: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<u8>, String>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            let Some(target) = self.tables.get(table) else {
                let mut known: Vec<&str> = self.tables.keys().map(String::as_str).collect();
                known.sort();
                return Err(format!(
                    "lookup of table '{table}': no rows given for it (tables given: {}); pass its rows \
                     as of the batch's version with --table {table}=FILE (JSON or CSV)",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ));
            };
            crate::sql::answer(&self.ctx, target, self.max_rows, column, keys, columns).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{Array, AsArray};
    use deltalake::arrow::datatypes::{Int64Type, TimestampMicrosecondType};

    fn write(name: &str, text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    #[test]
    fn json_array_infers_types_and_keeps_column_order() {
        let (_d, p) = write(
            "t.json",
            r#"[
  {"zeta": 1, "name": "a", "score": 1.5, "ok": true, "none": null},
  {"zeta": 2, "score": 2, "ok": false}
]"#,
        );
        let b = read_table(&p).unwrap();
        let s = b.schema();
        let names: Vec<&str> = s.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["zeta", "name", "score", "ok", "none"]);
        let types: Vec<&DataType> = s.fields().iter().map(|f| f.data_type()).collect();
        assert_eq!(
            types,
            [
                &DataType::Int64,
                &DataType::Utf8,
                &DataType::Float64,
                &DataType::Boolean,
                &DataType::Null
            ]
        );
        assert_eq!(b.num_rows(), 2);
        assert!(b.column(1).is_null(1), "a missing key is null");
    }

    #[test]
    fn json_lines_and_errors_name_file_and_line() {
        let (_d, p) = write("t.jsonl", "{\"a\": 1}\n\n{\"a\": 2}\n");
        assert_eq!(read_table(&p).unwrap().num_rows(), 2);

        let (_d, p) = write("bad.json", "[\n  {\"a\": 1},\n  {\"a\": 2,}\n]\n");
        let e = read_table(&p).unwrap_err();
        assert!(e.contains("bad.json:3:"), "{e}");

        let (_d, p) = write("mixed.json", "[\n{\"a\": 1},\n{\"a\": \"x\"}\n]");
        let e = read_table(&p).unwrap_err();
        assert!(
            e.contains("mixed.json:3: column 'a' is a string here but a number on line 2"),
            "{e}"
        );

        let (_d, p) = write("nested.json", "[{\"a\": [1]}]");
        assert!(read_table(&p).unwrap_err().contains("nested value"));

        let (_d, p) = write("notrow.json", "[1, 2]");
        let e = read_table(&p).unwrap_err();
        assert!(
            e.contains("notrow.json:1:2:") && e.contains("one row"),
            "{e}"
        );
    }

    #[test]
    fn csv_quoting_nulls_and_typed_headers() {
        let (_d, p) = write(
            "t.csv",
            "id, name ,code:string,flag\r\n1,\"a, \"\"quoted\"\"\",007,true\n\n2,,\"\",FALSE\n3,\"multi\nline\",8,\n",
        );
        let b = read_table(&p).unwrap();
        let s = b.schema();
        assert_eq!(s.field(0).data_type(), &DataType::Int64);
        assert_eq!(s.field(1).name(), "name");
        assert_eq!(s.field(2).data_type(), &DataType::Utf8);
        assert_eq!(s.field(3).data_type(), &DataType::Boolean);
        let name = b.column(1).as_string::<i32>();
        assert_eq!(name.value(0), "a, \"quoted\"");
        assert!(name.is_null(1), "an empty field is null");
        assert_eq!(name.value(2), "multi\nline");
        let code = b.column(2).as_string::<i32>();
        assert_eq!(code.value(0), "007");
        assert!(code.is_valid(1) && code.value(1).is_empty(), "\"\" is ''");
        assert_eq!(b.num_rows(), 3);

        let (_d, p) = write("short.csv", "a,b\n1,2\n3\n");
        assert!(read_table(&p)
            .unwrap_err()
            .contains("short.csv:3: 1 field(s), but the header has 2"));
        let (_d, p) = write("open.csv", "a\n\"x\n");
        assert!(read_table(&p)
            .unwrap_err()
            .contains("open.csv:2: a quoted field is not closed"));
        let (_d, p) = write("typed.csv", "a:long\nx\n");
        assert!(read_table(&p)
            .unwrap_err()
            .contains("typed.csv:2: column 'a': 'x' is not a long value"));
        let (_d, p) = write("mixed.csv", "a\n1\nx\n");
        assert_eq!(
            read_table(&p).unwrap().schema().field(0).data_type(),
            &DataType::Utf8,
            "CSV text that is not all numbers is a string column"
        );
    }

    #[test]
    fn changes_get_the_host_schema_and_defaults() {
        let (_d, p) = write(
            "up.csv",
            "id,_change_type,_commit_version,_commit_timestamp\n\
             1,,,\n\
             2,update_preimage,3,2024-05-01T12:00:00Z\n\
             3,update_postimage,3,2024-05-01 12:00:00\n",
        );
        let c = read_changes("up", &p).unwrap();
        let s = c.batch.schema();
        let names: Vec<&str> = s.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            ["id", CHANGE_TYPE, COMMIT_VERSION, COMMIT_TIMESTAMP],
            "the table's columns, then the three CDF columns"
        );
        assert_eq!(s.field(3).data_type(), &crate::cdf::timestamp_type());
        assert_eq!(c.versions, Some((1, 3)));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let types = c.batch.column(1).as_string::<i32>();
        assert_eq!(types.value(0), "insert");
        let v = c.batch.column(2).as_primitive::<Int64Type>();
        assert_eq!(v.value(0), 1);
        let ts = c.batch.column(3).as_primitive::<TimestampMicrosecondType>();
        assert!(ts.is_null(0));
        assert_eq!(ts.value(1), 1_714_564_800_000_000);
        assert_eq!(ts.value(2), ts.value(1));

        let (_d, p) = write("bad.json", "[{\"_change_type\": \"update\"}]");
        let e = read_changes("bad", &p).unwrap_err();
        assert!(
            e.contains("bad.json:1: _change_type 'update' is not one of"),
            "{e}"
        );
        let (_d, p) = write("lone.json", "{\"_change_type\": \"update_preimage\"}");
        let c = read_changes("lone", &p).unwrap();
        assert_eq!(c.warnings.len(), 1, "a pre-image without its post-image");
    }
}
