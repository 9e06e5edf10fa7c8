//! What `init` learns about the pipeline it serves: its name, upstreams and lookup
//! tables with their Arrow schemas, and its key columns.

use std::sync::{Arc, Mutex};

use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::error::Error;
use crate::output::{KeyColumn, KeyType};

/// A table the pipeline reads: an upstream (the schema of its change rows) or a lookup
/// table (the table's schema).
#[derive(Debug, Clone)]
pub struct TableInfo {
    name: String,
    schema: SchemaRef,
    /// The columns `init` checked or declared: what the host sends (contract 0.3).
    reads: Arc<Mutex<Reads>>,
}

/// What a plugin reads of a table, as `init` declared it.
#[derive(Debug, Clone, Default)]
struct Reads {
    columns: Vec<String>,
    all: bool,
}

impl TableInfo {
    /// A table of this name and schema.
    pub fn new(name: impl Into<String>, schema: SchemaRef) -> TableInfo {
        TableInfo {
            name: name.into(),
            schema,
            reads: Arc::default(),
        }
    }

    /// Declares that the plugin reads `columns` of this table (besides those it checks
    /// with [`TableInfo::column`] and the `require_*` checks, which count as read):
    /// under contract 0.3 the host sends only the columns a plugin reads (and an
    /// upstream's change columns). A table the plugin neither checks nor declares
    /// columns of is sent whole.
    pub fn reads(&self, columns: &[&str]) -> Result<&TableInfo, Error> {
        for c in columns {
            self.column(c)?;
        }
        Ok(self)
    }

    /// Declares that the plugin reads every column of this table.
    pub fn reads_all(&self) -> &TableInfo {
        self.reads.lock().unwrap_or_else(|p| p.into_inner()).all = true;
        self
    }

    /// The columns declared read: `None` when the table is read whole.
    pub fn read_columns(&self) -> Option<Vec<String>> {
        let r = self.reads.lock().unwrap_or_else(|p| p.into_inner());
        (!r.all && !r.columns.is_empty()).then(|| r.columns.clone())
    }

    /// The table's name in the catalog.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its Arrow schema, as of the moment the plugin was loaded.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The field `column`; the error lists the table's columns.
    pub fn column(&self, column: &str) -> Result<&Field, Error> {
        let found = self.schema.field_with_name(column);
        if found.is_ok() {
            let mut r = self.reads.lock().unwrap_or_else(|p| p.into_inner());
            if !r.columns.iter().any(|c| c == column) {
                r.columns.push(column.to_string());
            }
        }
        found.map_err(|_| {
            let names: Vec<&str> = self
                .schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            Error::new(format!(
                "table '{}' has no column '{column}' (its columns: {})",
                self.name,
                names.join(", ")
            ))
        })
    }

    /// Checks that `column` exists and holds integers (what `i64` getters read).
    pub fn require_int(&self, column: &str) -> Result<&TableInfo, Error> {
        let f = self.column(column)?;
        match f.data_type() {
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32 => Ok(self),
            t => Err(Error::new(format!(
                "column '{column}' of table '{}' is {t}, not an integer",
                self.name
            ))),
        }
    }

    /// Checks that `column` exists and holds strings.
    pub fn require_str(&self, column: &str) -> Result<&TableInfo, Error> {
        let f = self.column(column)?;
        match f.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Ok(self),
            DataType::Dictionary(_, v) if **v == DataType::Utf8 => Ok(self),
            t => Err(Error::new(format!(
                "column '{column}' of table '{}' is {t}, not a string",
                self.name
            ))),
        }
    }
}

/// The pipeline a plugin instance serves, as `init` receives it.
#[derive(Debug, Clone)]
pub struct PipelineInfo {
    name: String,
    upstreams: Vec<TableInfo>,
    lookups: Vec<TableInfo>,
    keys: Vec<KeyColumn>,
}

impl PipelineInfo {
    /// A pipeline description (for native unit tests of a plugin).
    pub fn new(
        name: impl Into<String>,
        upstreams: Vec<TableInfo>,
        lookups: Vec<TableInfo>,
        keys: Vec<KeyColumn>,
    ) -> PipelineInfo {
        PipelineInfo {
            name: name.into(),
            upstreams,
            lookups,
            keys,
        }
    }

    /// Decodes the record of the raw bindings; returns it with the config JSON.
    pub fn from_wit(
        info: crate::bindings::dlink::pipeline::types::PipelineInfo,
    ) -> Result<(PipelineInfo, String), Error> {
        let tables = |list: Vec<crate::bindings::dlink::pipeline::types::TableInfo>| {
            list.into_iter()
                .map(|t| {
                    let schema = decode_schema(&t.arrow_schema)
                        .map_err(|e| Error::new(format!("table '{}': {e}", t.name)))?;
                    Ok(TableInfo::new(t.name, schema))
                })
                .collect::<Result<Vec<_>, Error>>()
        };
        let keys = info
            .keys
            .into_iter()
            .map(|k| match KeyType::parse(&k.data_type) {
                Some(key_type) => Ok(KeyColumn {
                    name: k.name,
                    key_type,
                }),
                None => Err(Error::new(format!(
                    "key column '{}' has type '{}', which this SDK does not know",
                    k.name, k.data_type
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let pipeline = PipelineInfo::new(
            info.name,
            tables(info.upstreams)?,
            tables(info.lookups)?,
            keys,
        );
        Ok((pipeline, info.config))
    }

    /// What the plugin reads, per table, as contract 0.3's `init` returns it: the
    /// tables whose columns it checked or declared (the others are read whole).
    pub fn reads(&self) -> Vec<(String, Option<Vec<String>>)> {
        self.upstreams
            .iter()
            .chain(&self.lookups)
            .filter_map(|t| t.read_columns().map(|c| (t.name.clone(), Some(c))))
            .collect()
    }

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its upstreams, in the order the pipeline file lists them.
    pub fn upstreams(&self) -> &[TableInfo] {
        &self.upstreams
    }

    /// Its declared lookup tables (besides the upstreams).
    pub fn lookups(&self) -> &[TableInfo] {
        &self.lookups
    }

    /// The link table's key columns.
    pub fn keys(&self) -> &[KeyColumn] {
        &self.keys
    }

    /// The upstream `name`; the error lists the pipeline's upstreams.
    pub fn upstream(&self, name: &str) -> Result<&TableInfo, Error> {
        self.upstreams
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| {
                Error::new(format!(
                    "pipeline '{}' has no upstream '{name}' (its upstreams: {}); \
                 name it in the pipeline file or set the plugin's config to one of them",
                    self.name,
                    list(&self.upstreams)
                ))
            })
    }

    /// The upstreams by the roles the plugin gives them, in the order the pipeline file
    /// lists them: `let [staff, affiliations] = pipeline.upstreams_as(["staff",
    /// "affiliations"])?;`. The pipeline names its tables as it likes; the error says
    /// which roles the plugin expects when the count differs.
    pub fn upstreams_as<const N: usize>(&self, roles: [&str; N]) -> Result<[&TableInfo; N], Error> {
        <[&TableInfo; N]>::try_from(self.upstreams.iter().collect::<Vec<_>>()).map_err(|_| {
            Error::new(format!(
                "this plugin reads {N} upstream(s), in this order: {}; pipeline '{}' lists {}: {}",
                roles.join(", "),
                self.name,
                self.upstreams.len(),
                list(&self.upstreams)
            ))
        })
    }

    /// A table `lookup` may read: an upstream or a declared lookup table.
    pub fn table(&self, name: &str) -> Result<&TableInfo, Error> {
        self.upstreams
            .iter()
            .chain(&self.lookups)
            .find(|t| t.name == name)
            .ok_or_else(|| {
                Error::new(format!(
                    "pipeline '{}' can look up no table '{name}' (its upstreams: {}; \
                     its [lookups] tables: {})",
                    self.name,
                    list(&self.upstreams),
                    list(&self.lookups)
                ))
            })
    }

    /// Checks that the pipeline's key columns are exactly `expected` (names and types,
    /// in order): the keys this plugin produces.
    pub fn expect_keys(&self, expected: &[KeyColumn]) -> Result<(), Error> {
        if self.keys == expected {
            return Ok(());
        }
        let show = |k: &[KeyColumn]| {
            k.iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        Err(Error::new(format!(
            "pipeline '{}' declares the key ({}) in [link] keys, but this plugin produces ({})",
            self.name,
            show(&self.keys),
            show(expected)
        )))
    }
}

fn list(tables: &[TableInfo]) -> String {
    if tables.is_empty() {
        return "none".to_string();
    }
    tables
        .iter()
        .map(|t| t.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The schema of an IPC stream that holds no record batches.
pub(crate) fn decode_schema(bytes: &[u8]) -> Result<SchemaRef, String> {
    let reader = StreamReader::try_new(bytes, None)
        .map_err(|e| format!("cannot read the Arrow IPC schema: {e}"))?;
    Ok(reader.schema())
}

/// A schema as an IPC stream with no record batches (how the host sends it).
pub fn encode_schema(schema: &Schema) -> Result<Vec<u8>, String> {
    let error = |e: arrow_schema::ArrowError| format!("cannot encode the schema: {e}");
    let mut w = StreamWriter::try_new(Vec::new(), &Arc::new(schema.clone())).map_err(error)?;
    w.finish().map_err(error)?;
    w.into_inner().map_err(error)
}
