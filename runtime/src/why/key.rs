//! The key `why` explains: its column values, parsed from the command line.

use super::*;

/// The value of one key column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum KeyValue {
    Long(i64),
    Int(i32),
    String(String),
}

impl KeyValue {
    /// Parses `text` as a value of key column `k`.
    pub fn parse(k: &KeyColumn, text: &str) -> std::result::Result<KeyValue, String> {
        let bad = |what: &str| {
            format!(
                "key column '{}' is {} ({what}): '{text}' is not one",
                k.name, k.ty
            )
        };
        match k.ty {
            KeyType::Long => text
                .trim()
                .parse()
                .map(KeyValue::Long)
                .map_err(|_| bad("a 64-bit integer")),
            KeyType::Int => text
                .trim()
                .parse()
                .map(KeyValue::Int)
                .map_err(|_| bad("a 32-bit integer")),
            KeyType::String => Ok(KeyValue::String(text.to_string())),
        }
    }

    pub(super) fn lit(&self) -> Expr {
        match self {
            KeyValue::Long(v) => lit(*v),
            KeyValue::Int(v) => lit(*v),
            KeyValue::String(s) => lit(s.clone()),
        }
    }

    /// Whether row `row` of `col` holds this value.
    pub(super) fn is_at(&self, col: &dyn Array, row: usize) -> bool {
        if col.is_null(row) {
            return false;
        }
        match self {
            KeyValue::Long(v) => col
                .as_primitive_opt::<Int64Type>()
                .is_some_and(|c| c.value(row) == *v),
            KeyValue::Int(v) => col
                .as_primitive_opt::<Int32Type>()
                .is_some_and(|c| c.value(row) == *v),
            KeyValue::String(v) => col
                .as_string_opt::<i32>()
                .is_some_and(|c| c.value(row) == v),
        }
    }
}

impl std::fmt::Display for KeyValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyValue::Long(v) => write!(f, "{v}"),
            KeyValue::Int(v) => write!(f, "{v}"),
            KeyValue::String(s) => write!(f, "{s:?}"),
        }
    }
}

/// A key of a pipeline: one value per key column, in the pipeline's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub columns: Vec<(String, KeyValue)>,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .columns
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        f.write_str(&parts.join(", "))
    }
}

impl Key {
    /// The key as a JSON object.
    pub fn to_json(&self) -> Map<String, Value> {
        self.columns
            .iter()
            .map(|(n, v)| (n.clone(), serde_json::to_value(v).unwrap_or(Value::Null)))
            .collect()
    }

    /// The row of `keys` holding this key.
    pub(super) fn position_in(&self, keys: &AffectedKeys) -> Option<usize> {
        (0..keys.len()).find(|row| {
            self.columns
                .iter()
                .zip(&keys.columns)
                .all(|((_, v), c)| v.is_at(c.as_ref(), *row))
        })
    }

    pub(super) fn predicate(&self) -> Option<Expr> {
        self.columns
            .iter()
            .map(|(n, v)| ident(n.clone()).eq(v.lit()))
            .reduce(Expr::and)
    }
}

/// Parses a key given as one value per key column in the pipeline's order (`values`)
/// or as `COLUMN=VALUE` pairs (`named`), one of the two. Reports every problem.
pub fn parse_key(keys: &[KeyColumn], values: &[String], named: &[String]) -> Result<Key> {
    let columns = keys
        .iter()
        .map(|k| format!("{} {}", k.name, k.ty))
        .collect::<Vec<_>>()
        .join(", ");
    let mut problems = Vec::new();
    let mut found: Vec<Option<KeyValue>> = vec![None; keys.len()];
    match (values.is_empty(), named.is_empty()) {
        (true, true) => problems.push(format!(
            "give the key: one value per key column ({columns}), or --key COLUMN=VALUE for each"
        )),
        (false, false) => problems
            .push("give the key either as values or with --key COLUMN=VALUE, not both".to_string()),
        (false, true) if values.len() != keys.len() => problems.push(format!(
            "the pipeline's key has {} column(s) ({columns}) but {} value(s) were given; \
             give one value per column in that order, or --key COLUMN=VALUE for each",
            keys.len(),
            values.len()
        )),
        (false, true) => {
            for ((k, text), slot) in keys.iter().zip(values).zip(found.iter_mut()) {
                match KeyValue::parse(k, text) {
                    Ok(v) => *slot = Some(v),
                    Err(e) => problems.push(e),
                }
            }
        }
        (true, false) => {
            for pair in named {
                let Some((name, text)) = pair.split_once('=') else {
                    problems.push(format!(
                        "--key {pair}: give COLUMN=VALUE (key columns: {columns})"
                    ));
                    continue;
                };
                let name = name.trim();
                let Some(i) = keys.iter().position(|k| k.name == name) else {
                    problems.push(format!(
                        "--key {pair}: '{name}' is not a key column of the pipeline (key columns: {columns})"
                    ));
                    continue;
                };
                if found[i].is_some() {
                    problems.push(format!("--key {pair}: key column '{name}' is given twice"));
                    continue;
                }
                match KeyValue::parse(&keys[i], text) {
                    Ok(v) => found[i] = Some(v),
                    Err(e) => problems.push(e),
                }
            }
            let missing: Vec<&str> = keys
                .iter()
                .zip(&found)
                .filter(|(_, v)| v.is_none())
                .map(|(k, _)| k.name.as_str())
                .collect();
            if problems.is_empty() && !missing.is_empty() {
                problems.push(format!(
                    "the key has no value for column(s) {}: give --key COLUMN=VALUE for each of {columns}",
                    missing.join(", ")
                ));
            }
        }
    }
    if !problems.is_empty() {
        return Err(Error::Config(crate::config::ConfigError { problems }));
    }
    Ok(Key {
        columns: keys
            .iter()
            .zip(found)
            .filter_map(|(k, v)| v.map(|v| (k.name.clone(), v)))
            .collect(),
    })
}
