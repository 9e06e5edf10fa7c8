//! The rows of an upstream's changes, one at a time.

use super::*;

/// Iterator over the rows of [`Changes`].
#[derive(Debug, Clone)]
pub struct Rows<'a> {
    pub(super) changes: &'a Changes,
    pub(super) inner: TableRows<'a>,
}

impl<'a> Iterator for Rows<'a> {
    type Item = Row<'a>;

    fn next(&mut self) -> Option<Row<'a>> {
        self.inner.next().map(|row| Row {
            changes: self.changes,
            row,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl ExactSizeIterator for Rows<'_> {}

/// One change row of an upstream.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    pub(super) changes: &'a Changes,
    row: TableRow<'a>,
}

impl<'a> Row<'a> {
    /// The upstream this change row belongs to.
    pub fn upstream(&self) -> &'a str {
        &self.changes.name
    }

    /// The row's `_change_type`.
    pub fn change_type(&self) -> ChangeType {
        self.changes.change_types[self.row.position()]
    }

    /// The row's `_commit_version`.
    pub fn commit_version(&self) -> i64 {
        self.changes.versions()[self.row.position()]
    }

    /// The row's `_commit_timestamp` in microseconds since the Unix epoch (UTC).
    pub fn commit_timestamp(&self) -> Option<i64> {
        self.changes.commit_timestamps()[self.row.position()]
    }

    /// The row's position among its upstream's change rows (0-based).
    pub fn position(&self) -> usize {
        self.row.position()
    }

    /// The value of an integer column (Int8..Int64, UInt8..UInt32), widened to i64;
    /// `None` when null. Errors name the upstream and the column.
    pub fn i64(&self, column: &str) -> Result<Option<i64>, String> {
        self.row.i64(column)
    }

    /// The value of a string column (Utf8, LargeUtf8, Utf8View); `None` when null.
    pub fn str(&self, column: &str) -> Result<Option<&'a str>, String> {
        self.row.str(column)
    }

    /// True when the column is null in this row.
    pub fn is_null(&self, column: &str) -> Result<bool, String> {
        self.row.is_null(column)
    }

    /// Raw access for other types: the column's array and the row's index in it.
    pub fn array(&self, column: &str) -> Result<(&'a ArrayRef, usize), String> {
        self.row.array(column)
    }

    /// The row's data as a plain table row.
    pub fn values(&self) -> TableRow<'a> {
        self.row
    }
}
