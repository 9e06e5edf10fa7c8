//! The types of keys: their Arrow types, columns and values, and what turns into one.

use std::fmt;

use arrow_schema::DataType;

/// The Arrow type of a key column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// int64 ("long").
    Int64,
    /// int32 ("int"); values are given as i64 and must fit.
    Int32,
    /// utf8 ("string").
    Utf8,
}

impl KeyType {
    /// The Arrow data type.
    pub fn data_type(self) -> DataType {
        match self {
            KeyType::Int64 => DataType::Int64,
            KeyType::Int32 => DataType::Int32,
            KeyType::Utf8 => DataType::Utf8,
        }
    }

    /// The type named as the contract names it (`int64`, `int32`, `utf8`).
    pub fn parse(name: &str) -> Option<KeyType> {
        match name {
            "int64" => Some(KeyType::Int64),
            "int32" => Some(KeyType::Int32),
            "utf8" => Some(KeyType::Utf8),
            _ => None,
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyType::Int64 => "int64",
            KeyType::Int32 => "int32",
            KeyType::Utf8 => "utf8",
        })
    }
}

/// One key column of the pipeline's link table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyColumn {
    /// Column name.
    pub name: String,
    /// Column type.
    pub key_type: KeyType,
}

impl KeyColumn {
    /// An int64 key column.
    pub fn i64(name: &str) -> KeyColumn {
        KeyColumn {
            name: name.to_string(),
            key_type: KeyType::Int64,
        }
    }

    /// An int32 key column. Its values are given as `i64` and must fit in int32.
    pub fn i32(name: &str) -> KeyColumn {
        KeyColumn {
            name: name.to_string(),
            key_type: KeyType::Int32,
        }
    }

    /// A utf8 key column.
    pub fn utf8(name: &str) -> KeyColumn {
        KeyColumn {
            name: name.to_string(),
            key_type: KeyType::Utf8,
        }
    }
}

impl fmt::Display for KeyColumn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.key_type)
    }
}

/// One value of a key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyValue {
    /// A value of an integer key column.
    Int64(i64),
    /// A value of a utf8 key column.
    Utf8(String),
}

impl KeyValue {
    /// The value as plain text (a string without quotes).
    pub(crate) fn to_plain(&self) -> String {
        match self {
            KeyValue::Int64(v) => v.to_string(),
            KeyValue::Utf8(v) => v.clone(),
        }
    }
}

impl fmt::Display for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyValue::Int64(v) => write!(f, "{v}"),
            KeyValue::Utf8(v) => write!(f, "{v:?}"),
        }
    }
}

/// A value that can be one column of a key; `None` (null) means "no key".
pub trait IntoKeyValue {
    /// The key value, or `None` for null.
    fn into_key_value(self) -> Option<KeyValue>;
}

impl IntoKeyValue for KeyValue {
    fn into_key_value(self) -> Option<KeyValue> {
        Some(self)
    }
}

impl IntoKeyValue for i64 {
    fn into_key_value(self) -> Option<KeyValue> {
        Some(KeyValue::Int64(self))
    }
}

impl IntoKeyValue for &str {
    fn into_key_value(self) -> Option<KeyValue> {
        Some(KeyValue::Utf8(self.to_string()))
    }
}

impl IntoKeyValue for String {
    fn into_key_value(self) -> Option<KeyValue> {
        Some(KeyValue::Utf8(self))
    }
}

impl<T: IntoKeyValue> IntoKeyValue for Option<T> {
    fn into_key_value(self) -> Option<KeyValue> {
        self.and_then(IntoKeyValue::into_key_value)
    }
}

/// A whole key: one value per key column, in declaration order. Implemented for single
/// values (`i64`, `&str`, `String`, `Option` of those, [`KeyValue`]), tuples of up to
/// four of them, and `Vec<KeyValue>`. A key with any null part is no key (skipped).
pub trait IntoKey {
    /// The key's values, or `None` when a part is null.
    fn into_key(self) -> Option<Vec<KeyValue>>;
}

impl<T: IntoKeyValue> IntoKey for T {
    fn into_key(self) -> Option<Vec<KeyValue>> {
        self.into_key_value().map(|v| vec![v])
    }
}

impl<A: IntoKeyValue, B: IntoKeyValue> IntoKey for (A, B) {
    fn into_key(self) -> Option<Vec<KeyValue>> {
        Some(vec![self.0.into_key_value()?, self.1.into_key_value()?])
    }
}

impl<A: IntoKeyValue, B: IntoKeyValue, C: IntoKeyValue> IntoKey for (A, B, C) {
    fn into_key(self) -> Option<Vec<KeyValue>> {
        Some(vec![
            self.0.into_key_value()?,
            self.1.into_key_value()?,
            self.2.into_key_value()?,
        ])
    }
}

impl<A: IntoKeyValue, B: IntoKeyValue, C: IntoKeyValue, D: IntoKeyValue> IntoKey for (A, B, C, D) {
    fn into_key(self) -> Option<Vec<KeyValue>> {
        Some(vec![
            self.0.into_key_value()?,
            self.1.into_key_value()?,
            self.2.into_key_value()?,
            self.3.into_key_value()?,
        ])
    }
}

impl IntoKey for Vec<KeyValue> {
    fn into_key(self) -> Option<Vec<KeyValue>> {
        Some(self)
    }
}
