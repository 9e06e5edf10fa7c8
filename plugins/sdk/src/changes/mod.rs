//! A batch's upstream change rows (Delta Lake Change Data Feed).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType,
};
use arrow_array::{Array, ArrayRef};
use arrow_schema::{DataType, TimeUnit};

use crate::table::{IntColumn, StrColumn, Table, TableRow, TableRows};

mod batch;
mod row;

pub use batch::Batch;
pub use row::{Row, Rows};

/// Name of the change type column of change rows.
pub const CHANGE_TYPE_COLUMN: &str = "_change_type";
/// Name of the commit version column of change rows.
pub const COMMIT_VERSION_COLUMN: &str = "_commit_version";
/// Name of the commit timestamp column of change rows (and of the output).
pub const COMMIT_TIMESTAMP_COLUMN: &str = "_commit_timestamp";

/// The `_change_type` of a change row.
///
/// An update produces two rows: the `UpdatePreimage` (the row as it was) and the
/// `UpdatePostimage` (the row as it is now). A plugin must look at both: when a join
/// column changes, the old and the new side are both affected. Deletes count too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChangeType {
    /// `insert`: a new row.
    Insert,
    /// `update_preimage`: an updated row as it was before the commit.
    UpdatePreimage,
    /// `update_postimage`: an updated row as it is after the commit.
    UpdatePostimage,
    /// `delete`: a removed row, as it was before the commit.
    Delete,
}

impl ChangeType {
    /// The Change Data Feed spelling: `insert`, `update_preimage`, `update_postimage`,
    /// `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Insert => "insert",
            ChangeType::UpdatePreimage => "update_preimage",
            ChangeType::UpdatePostimage => "update_postimage",
            ChangeType::Delete => "delete",
        }
    }

    /// True for rows that show the table row as it was before the commit
    /// (`update_preimage`, `delete`).
    pub fn is_before_image(self) -> bool {
        matches!(self, ChangeType::UpdatePreimage | ChangeType::Delete)
    }

    /// True for rows that show the table row as it is after the commit
    /// (`insert`, `update_postimage`).
    pub fn is_after_image(self) -> bool {
        !self.is_before_image()
    }
}

impl fmt::Display for ChangeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChangeType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "insert" => Ok(ChangeType::Insert),
            "update_preimage" => Ok(ChangeType::UpdatePreimage),
            "update_postimage" => Ok(ChangeType::UpdatePostimage),
            "delete" => Ok(ChangeType::Delete),
            other => Err(format!(
                "unknown change type '{other}' (expected insert, update_preimage, \
                 update_postimage or delete)"
            )),
        }
    }
}

/// The change rows of one upstream in a batch.
///
/// The data columns are the upstream table's; `_change_type`, `_commit_version` and
/// `_commit_timestamp` are checked up front, so [`Row`]'s accessors for them cannot
/// fail. The change types are decoded then too; versions and timestamps on first use
/// (a plugin that passes whole columns through, [`Keys::add_column`](crate::Keys),
/// never pays for them).
#[derive(Debug, Clone)]
pub struct Changes {
    name: String,
    start_version: i64,
    end_version: i64,
    table: Table,
    change_types: Vec<ChangeType>,
    commit_versions: OnceLock<Vec<i64>>,
    commit_timestamps: OnceLock<Vec<Option<i64>>>,
}

impl Changes {
    /// Decodes an upstream's change rows from Arrow IPC stream bytes (zero bytes: no
    /// rows). Errors name the upstream and the column.
    pub fn from_ipc(
        name: impl Into<String>,
        start_version: i64,
        end_version: i64,
        bytes: &[u8],
    ) -> Result<Changes, String> {
        let name = name.into();
        let table = Table::from_ipc(format!("upstream '{name}'"), bytes)?;
        Changes::from_table(name, start_version, end_version, table)
    }

    /// [`Changes::from_ipc`] on bytes it owns: the column data is not copied.
    pub fn from_ipc_owned(
        name: impl Into<String>,
        start_version: i64,
        end_version: i64,
        bytes: Vec<u8>,
    ) -> Result<Changes, String> {
        let name = name.into();
        let table = Table::from_ipc_owned(format!("upstream '{name}'"), bytes)?;
        Changes::from_table(name, start_version, end_version, table)
    }

    /// Wraps decoded change rows; checks and decodes the three CDF columns.
    pub fn from_table(
        name: impl Into<String>,
        start_version: i64,
        end_version: i64,
        table: Table,
    ) -> Result<Changes, String> {
        let name = name.into();
        let mut change_types = Vec::with_capacity(table.len());
        if table.schema().is_some() {
            for column in [
                CHANGE_TYPE_COLUMN,
                COMMIT_VERSION_COLUMN,
                COMMIT_TIMESTAMP_COLUMN,
            ] {
                if !table.has_column(column) {
                    return Err(format!(
                        "upstream '{name}': the change rows have no '{column}' column \
                         (columns: {})",
                        table.column_names().join(", ")
                    ));
                }
            }
        }
        for batch in table.record_batches() {
            let column = |c: &str| {
                batch
                    .column_by_name(c)
                    .ok_or_else(|| format!("upstream '{name}': a record batch has no '{c}' column"))
            };
            let source = format!("upstream '{name}'");
            let versions = column(COMMIT_VERSION_COLUMN)?;
            // Checked here so that the lazy decoding cannot fail.
            IntColumn::new(&source, COMMIT_VERSION_COLUMN, versions)?;
            if versions.null_count() > 0 {
                let row = (0..versions.len())
                    .find(|i| versions.is_null(*i))
                    .unwrap_or(0);
                return Err(format!(
                    "upstream '{name}': row {} has a null {COMMIT_VERSION_COLUMN}",
                    change_types.len() + row
                ));
            }
            let _checked = timestamp_micros(&name, column(COMMIT_TIMESTAMP_COLUMN)?)?;
            decode_change_types(&name, column(CHANGE_TYPE_COLUMN)?, &mut change_types)?;
        }
        Ok(Changes {
            name,
            start_version,
            end_version,
            table,
            change_types,
            commit_versions: OnceLock::new(),
            commit_timestamps: OnceLock::new(),
        })
    }

    /// Every row's `_commit_version` (checked at decoding, read on first use).
    fn versions(&self) -> &[i64] {
        self.commit_versions.get_or_init(|| {
            let mut out = Vec::with_capacity(self.len());
            for b in self.table.record_batches() {
                if let Some(c) = b.column_by_name(COMMIT_VERSION_COLUMN) {
                    if let Ok(ints) = IntColumn::new("", COMMIT_VERSION_COLUMN, c) {
                        out.extend((0..b.num_rows()).map(|i| ints.get(i).unwrap_or_default()));
                    }
                }
            }
            out
        })
    }

    /// The upstream's name in the catalog.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// First table version read for this batch (inclusive).
    pub fn start_version(&self) -> i64 {
        self.start_version
    }

    /// Last table version read for this batch (inclusive); lookups read this version.
    pub fn end_version(&self) -> i64 {
        self.end_version
    }

    /// Number of change rows.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when the upstream has no changes in this batch.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The change rows as a plain table (including the three CDF columns).
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// Every change row, in stream order: inserts, both images of updates, and deletes.
    pub fn rows(&self) -> Rows<'_> {
        Rows {
            changes: self,
            inner: self.table.rows(),
        }
    }

    /// The change rows of one change type.
    pub fn rows_of(&self, change_type: ChangeType) -> impl Iterator<Item = Row<'_>> + '_ {
        self.rows().filter(move |r| r.change_type() == change_type)
    }

    /// Every value of an integer column, widened to i64 (null -> `None`).
    pub fn i64_column(&self, column: &str) -> Result<Vec<Option<i64>>, String> {
        self.table.i64_column(column)
    }

    /// [`Changes::i64_column`] as an iterator (no vector of every value): the fast way
    /// to give [`Keys::add_each`](crate::Keys::add_each) a column of keys.
    pub fn i64_values(
        &self,
        column: &str,
    ) -> Result<impl Iterator<Item = Option<i64>> + '_, String> {
        self.table.i64_values(column)
    }

    /// Every row's `_commit_timestamp` (as [`Row::commit_timestamp`]), in row order.
    pub fn commit_timestamps(&self) -> &[Option<i64>] {
        self.commit_timestamps.get_or_init(|| {
            let mut out = Vec::with_capacity(self.len());
            for b in self.table.record_batches() {
                match b
                    .column_by_name(COMMIT_TIMESTAMP_COLUMN)
                    .map(|c| timestamp_micros(&self.name, c))
                {
                    Some(Ok(micros)) => out.extend((0..b.num_rows()).map(micros)),
                    _ => out.extend(std::iter::repeat_n(None, b.num_rows())),
                }
            }
            out
        })
    }

    /// Every value of a string column (null -> `None`).
    pub fn str_column(&self, column: &str) -> Result<Vec<Option<&str>>, String> {
        self.table.str_column(column)
    }

    /// The distinct non-null values of an integer column, each with the newest commit
    /// timestamp among the change rows (of any change type) that hold it. Handy before
    /// a lookup: the keys found through a value are attributed to that time.
    pub fn newest_commit_by_i64(&self, column: &str) -> Result<BTreeMap<i64, Option<i64>>, String> {
        // Sorted once and built in bulk: inserting row by row into the tree cost more
        // than the rest of a typical `derive` on large batches.
        let mut pairs: Vec<(i64, Option<i64>)> = self
            .i64_values(column)?
            .zip(self.commit_timestamps())
            .filter_map(|(value, ts)| value.map(|v| (v, *ts)))
            .collect();
        pairs.sort_unstable_by_key(|(v, _)| *v);
        pairs.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                kept.1 = newest(kept.1, later.1);
            }
            same
        });
        Ok(pairs.into_iter().collect())
    }

    /// Pairs each `update_postimage` row with its `update_preimage` row: the one of the
    /// same commit version with the same (non-null) value of `id_column`, an integer
    /// column that identifies a table row (its primary key). Returns `(pre, post)`
    /// pairs in post-image order; rows without a partner are left out.
    pub fn update_pairs(&self, id_column: &str) -> Result<Vec<(Row<'_>, Row<'_>)>, String> {
        let mut pre: HashMap<(i64, i64), Row<'_>> = HashMap::new();
        for row in self.rows_of(ChangeType::UpdatePreimage) {
            if let Some(id) = row.i64(id_column)? {
                pre.insert((row.commit_version(), id), row);
            }
        }
        let mut pairs = Vec::new();
        for post in self.rows_of(ChangeType::UpdatePostimage) {
            if let Some(id) = post.i64(id_column)? {
                if let Some(before) = pre.remove(&(post.commit_version(), id)) {
                    pairs.push((before, post));
                }
            }
        }
        Ok(pairs)
    }
}

/// Appends the change type of every row of `array`; an error names the upstream and
/// the row (counted across the upstream's record batches).
fn decode_change_types(
    upstream: &str,
    array: &ArrayRef,
    out: &mut Vec<ChangeType>,
) -> Result<(), String> {
    let parse = |value: Option<&str>, position: usize| match value {
        Some(v) => match v.as_bytes() {
            b"insert" => Ok(ChangeType::Insert),
            b"delete" => Ok(ChangeType::Delete),
            b"update_preimage" => Ok(ChangeType::UpdatePreimage),
            b"update_postimage" => Ok(ChangeType::UpdatePostimage),
            _ => v
                .parse::<ChangeType>()
                .map_err(|e| format!("upstream '{upstream}': row {position}: {e}")),
        },
        None => Err(format!(
            "upstream '{upstream}': row {position} has a null {CHANGE_TYPE_COLUMN}"
        )),
    };
    let start = out.len();
    out.reserve(array.len());
    // Contract 0.3: one int8 code per row (0 insert, 1 update_preimage, 2
    // update_postimage, 3 delete).
    if let Some(a) = array.as_primitive_opt::<arrow_array::types::Int8Type>() {
        for (i, code) in a.iter().enumerate() {
            out.push(match code {
                Some(0) => ChangeType::Insert,
                Some(1) => ChangeType::UpdatePreimage,
                Some(2) => ChangeType::UpdatePostimage,
                Some(3) => ChangeType::Delete,
                Some(other) => {
                    return Err(format!(
                        "upstream '{upstream}': row {} has {CHANGE_TYPE_COLUMN} code {other} (0-3 are known)",
                        start + i
                    ))
                }
                None => {
                    return Err(format!(
                        "upstream '{upstream}': row {} has a null {CHANGE_TYPE_COLUMN}",
                        start + i
                    ))
                }
            });
        }
        return Ok(());
    }
    // The usual layout (plain utf8, no nulls) in one pass over the offsets, without a
    // per-row `Option`; anything unexpected is found again below for its message.
    if let Some(a) = array.as_string_opt::<i32>().filter(|a| a.null_count() == 0) {
        let values = a.values().as_slice();
        let mut bad = false;
        out.extend(a.value_offsets().windows(2).map(|w| {
            let v = values.get(w[0] as usize..w[1] as usize).unwrap_or_default();
            match v {
                b"insert" => ChangeType::Insert,
                b"delete" => ChangeType::Delete,
                b"update_preimage" => ChangeType::UpdatePreimage,
                b"update_postimage" => ChangeType::UpdatePostimage,
                _ => {
                    bad = true;
                    ChangeType::Insert
                }
            }
        }));
        if !bad {
            return Ok(());
        }
        out.truncate(start);
    }
    if let Some(a) = array.as_string_opt::<i32>() {
        for (i, v) in a.iter().enumerate() {
            out.push(parse(v, start + i)?);
        }
        return Ok(());
    }
    let source = format!("upstream '{upstream}'");
    let types = StrColumn::new(&source, CHANGE_TYPE_COLUMN, array)?;
    for i in 0..array.len() {
        out.push(parse(types.get(i), start + i)?);
    }
    Ok(())
}

/// The newer of two optional commit timestamps (a known time beats an unknown one).
pub(crate) fn newest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Reads a timestamp column of any unit as microseconds since the epoch.
fn timestamp_micros<'a>(
    upstream: &str,
    array: &'a ArrayRef,
) -> Result<impl Fn(usize) -> Option<i64> + 'a, String> {
    enum Ts<'a> {
        S(&'a arrow_array::PrimitiveArray<TimestampSecondType>),
        Ms(&'a arrow_array::PrimitiveArray<TimestampMillisecondType>),
        Us(&'a arrow_array::PrimitiveArray<TimestampMicrosecondType>),
        Ns(&'a arrow_array::PrimitiveArray<TimestampNanosecondType>),
        Null,
    }
    let ts = match array.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => array.as_primitive_opt().map(Ts::S),
        DataType::Timestamp(TimeUnit::Millisecond, _) => array.as_primitive_opt().map(Ts::Ms),
        DataType::Timestamp(TimeUnit::Microsecond, _) => array.as_primitive_opt().map(Ts::Us),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => array.as_primitive_opt().map(Ts::Ns),
        DataType::Null => Some(Ts::Null),
        _ => None,
    }
    .ok_or_else(|| {
        format!(
            "upstream '{upstream}': column '{COMMIT_TIMESTAMP_COLUMN}' is {}, not a timestamp",
            array.data_type()
        )
    })?;
    Ok(move |i: usize| {
        if i >= array.len() || array.is_null(i) {
            return None;
        }
        match &ts {
            Ts::S(a) => a.value(i).checked_mul(1_000_000),
            Ts::Ms(a) => a.value(i).checked_mul(1_000),
            Ts::Us(a) => Some(a.value(i)),
            Ts::Ns(a) => Some(a.value(i).div_euclid(1_000)),
            Ts::Null => None,
        }
    })
}
