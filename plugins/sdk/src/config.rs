//! The plugin config: the pipeline's `[plugin.config]` table, rendered as JSON.

use serde_json::{Map, Value};

/// The pipeline's `[plugin.config]` table (a JSON object; `{}` when absent).
///
/// The SDK keeps the config given to `init`; `derive` reads it through
/// [`Batch::config`](crate::Batch::config).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    raw: String,
    object: Map<String, Value>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            raw: "{}".to_string(),
            object: Map::new(),
        }
    }
}

impl Config {
    /// Parses the config JSON, which must be an object. An empty string is `{}`.
    pub fn parse(json: &str) -> Result<Config, String> {
        if json.trim().is_empty() {
            return Ok(Config::default());
        }
        match serde_json::from_str::<Value>(json) {
            Ok(Value::Object(object)) => Ok(Config {
                raw: json.to_string(),
                object,
            }),
            Ok(other) => Err(format!(
                "plugin config must be a JSON object, got: {}",
                truncate(&other.to_string())
            )),
            Err(e) => Err(format!("plugin config is not valid JSON: {e}")),
        }
    }

    /// The JSON text as given by the host.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// The config's fields.
    pub fn fields(&self) -> &Map<String, Value> {
        &self.object
    }

    /// The value of a field, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.object.get(key)
    }

    /// A string field: `None` when absent, an error when present but not a string.
    pub fn str(&self, key: &str) -> Result<Option<&str>, String> {
        match self.object.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(format!(
                "plugin config field '{key}' must be a string, got: {}",
                truncate(&other.to_string())
            )),
        }
    }

    /// A string field, or `default` when absent; an error when not a string. Typical
    /// use: let the config rename an upstream,
    /// `batch.config().str_or("employee", "employee")?`.
    pub fn str_or<'a>(&'a self, key: &str, default: &'a str) -> Result<&'a str, String> {
        Ok(self.str(key)?.unwrap_or(default))
    }
}

fn truncate(s: &str) -> String {
    const MAX: usize = 80;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}
