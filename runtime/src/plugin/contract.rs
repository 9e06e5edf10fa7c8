//! The plugin contracts the host speaks: `dlink:pipeline@0.3.0` (`wit/pipeline.wit`:
//! tables as columns spelled in WIT types, `init` declaring the columns it reads),
//! `dlink:pipeline@0.2.0` (`wit/v0.2`: a stateful `pipeline` resource given the
//! pipeline at `init`, tables as Arrow IPC bytes, keys returned per causing upstream)
//! and `dlink:pipeline@0.1.0` (`wit/v0.1`: plain `init(config)` and `derive` exports,
//! keys returned as one stream with `_upstream`). A component's exports say which one
//! it speaks.

use std::fmt;

use deltalake::arrow::datatypes::SchemaRef;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::Component;
use wasmtime::Engine;

use crate::config::KeyColumn;

pub(crate) mod v0_1 {
    wasmtime::component::bindgen!({
        world: "pipeline-plugin",
        path: "../wit/v0.1",
        imports: { default: async },
        exports: { default: async },
    });
}

pub(crate) mod v0_2 {
    wasmtime::component::bindgen!({
        world: "pipeline-plugin",
        path: "../wit/v0.2",
        imports: { default: async },
        exports: { default: async },
    });
}

pub(crate) mod v0_3 {
    wasmtime::component::bindgen!({
        world: "pipeline-plugin",
        path: "../wit",
        imports: { default: async },
        exports: { default: async },
    });
}

/// The export of a 0.2 plugin: the interface holding the `pipeline` resource.
const V0_2_EXPORT: &str = "dlink:pipeline/plugin@0.2.0";
/// The same of a 0.3 plugin.
const V0_3_EXPORT: &str = "dlink:pipeline/plugin@0.3.0";

/// A version of the plugin contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Contract {
    /// `dlink:pipeline@0.1.0`: `init(config)`, `derive(batch) -> arrow-ipc`.
    #[serde(rename = "dlink:pipeline@0.1.0")]
    V0_1,
    /// `dlink:pipeline@0.2.0`: the `pipeline` resource, columnar keys per upstream.
    #[serde(rename = "dlink:pipeline@0.2.0")]
    V0_2,
    /// `dlink:pipeline@0.3.0`: tables as columns in WIT types, the columns read
    /// declared by `init`.
    #[serde(rename = "dlink:pipeline@0.3.0")]
    V0_3,
}

impl Contract {
    /// The contract `component` speaks, from its exports (none: not a plugin).
    pub(crate) fn of(component: &Component, engine: &Engine) -> Option<Contract> {
        let ty = component.component_type();
        let mut funcs = (false, false);
        for (name, item) in ty.exports(engine) {
            match (name, item.ty) {
                (V0_3_EXPORT, ComponentItem::ComponentInstance(_)) => return Some(Contract::V0_3),
                (V0_2_EXPORT, ComponentItem::ComponentInstance(_)) => return Some(Contract::V0_2),
                ("init", ComponentItem::ComponentFunc(_)) => funcs.0 = true,
                ("derive", ComponentItem::ComponentFunc(_)) => funcs.1 = true,
                _ => {}
            }
        }
        (funcs == (true, true)).then_some(Contract::V0_1)
    }

    /// The version alone, e.g. `0.2.0`.
    pub fn version(self) -> &'static str {
        match self {
            Contract::V0_1 => "0.1.0",
            Contract::V0_2 => "0.2.0",
            Contract::V0_3 => "0.3.0",
        }
    }
}

impl fmt::Display for Contract {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dlink:pipeline@{}", self.version())
    }
}

/// What a plugin's `init` is told about its pipeline (contracts 0.2 and 0.3; a 0.1 plugin gets
/// only the config).
#[derive(Debug, Clone, Default)]
pub struct PipelineInfo {
    pub name: String,
    /// Each upstream with the schema of its change rows, in the pipeline file's order.
    pub upstreams: Vec<(String, SchemaRef)>,
    /// Each declared lookup table with its schema.
    pub lookups: Vec<(String, SchemaRef)>,
    pub keys: Vec<KeyColumn>,
}

impl PipelineInfo {
    /// The record `init` receives.
    pub(crate) fn to_wit(
        &self,
        config: &str,
    ) -> Result<v0_2::dlink::pipeline::types::PipelineInfo, deltalake::arrow::error::ArrowError>
    {
        use v0_2::dlink::pipeline::types as w;
        let tables = |list: &[(String, SchemaRef)]| {
            list.iter()
                .map(|(name, schema)| {
                    Ok(w::TableInfo {
                        name: name.clone(),
                        schema: crate::ipc::encode(schema, &[])?,
                    })
                })
                .collect::<Result<Vec<_>, deltalake::arrow::error::ArrowError>>()
        };
        Ok(w::PipelineInfo {
            name: self.name.clone(),
            upstreams: tables(&self.upstreams)?,
            lookups: tables(&self.lookups)?,
            keys: self
                .keys
                .iter()
                .map(|k| w::KeyColumn {
                    name: k.name.clone(),
                    data_type: key_type_name(k.ty).to_string(),
                })
                .collect(),
            config: config.to_string(),
        })
    }
}

impl PipelineInfo {
    /// The record a contract 0.3 `init` receives.
    pub(crate) fn to_wit_v0_3(
        &self,
        config: &str,
    ) -> Result<v0_3::dlink::pipeline::types::PipelineInfo, deltalake::arrow::error::ArrowError>
    {
        use v0_3::dlink::pipeline::types as w;
        let tables = |list: &[(String, SchemaRef)], changes: bool| {
            list.iter()
                .map(|(name, schema)| {
                    let schema = if changes {
                        super::columns::change_codes_schema(schema)
                    } else {
                        schema.clone()
                    };
                    Ok(w::TableInfo {
                        name: name.clone(),
                        fields: super::columns::fields(&schema),
                        arrow_schema: crate::ipc::encode(&schema, &[])?,
                    })
                })
                .collect::<Result<Vec<_>, deltalake::arrow::error::ArrowError>>()
        };
        Ok(w::PipelineInfo {
            name: self.name.clone(),
            upstreams: tables(&self.upstreams, true)?,
            lookups: tables(&self.lookups, false)?,
            keys: self
                .keys
                .iter()
                .map(|k| w::KeyColumn {
                    name: k.name.clone(),
                    data_type: key_type_name(k.ty).to_string(),
                })
                .collect(),
            config: config.to_string(),
        })
    }
}

/// A key column's type as the contracts name it.
fn key_type_name(t: crate::config::KeyType) -> &'static str {
    match t {
        crate::config::KeyType::Long => "int64",
        crate::config::KeyType::Int => "int32",
        crate::config::KeyType::String => "utf8",
    }
}

/// What `derive` returned, in the shape of the plugin's contract.
#[derive(Debug, Clone)]
pub enum Output {
    /// 0.1: one IPC stream with the key columns, `_upstream` and `_commit_timestamp`.
    Combined(Vec<u8>),
    /// 0.2: per causing upstream, an IPC stream with the key columns and
    /// `_commit_timestamp`.
    PerUpstream(Vec<(String, Vec<u8>)>),
    /// 0.3: per causing upstream, the key columns (and `_commit_timestamp`) as the
    /// guest returned them, not yet checked.
    Columns(Vec<(String, Columns)>),
}

/// A contract 0.3 record batch (sent to a guest, or returned by one).
#[derive(Debug, Clone)]
pub struct Columns(pub(crate) v0_3::dlink::pipeline::types::RecordBatch);

impl Columns {
    /// The columns' names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.0.columns.iter().map(|c| c.name.as_str()).collect()
    }

    /// The rows.
    pub fn num_rows(&self) -> usize {
        self.0.num_rows as usize
    }

    /// The bytes its lists hold.
    pub fn size(&self) -> usize {
        super::columns::size(&self.0)
    }
}

impl Output {
    /// Bytes returned in all.
    pub fn len(&self) -> usize {
        match self {
            Output::Combined(b) => b.len(),
            Output::PerUpstream(parts) => parts.iter().map(|(_, b)| b.len()).sum(),
            Output::Columns(parts) => parts.iter().map(|(_, c)| super::columns::size(&c.0)).sum(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Validates the output and folds it into one row per affected key.
    pub fn collect(
        self,
        keys: &[crate::config::KeyColumn],
        upstream_names: &[&str],
    ) -> Result<crate::affected::AffectedKeys, crate::affected::InvalidKeys> {
        match self {
            Output::Combined(ipc) => crate::affected::collect(&ipc, keys, upstream_names),
            Output::PerUpstream(parts) => {
                crate::affected::collect_per_upstream(parts, keys, upstream_names)
            }
            Output::Columns(_) => {
                let mut set = crate::affected::KeySet::new(
                    keys,
                    upstream_names,
                    usize::MAX,
                    &std::env::temp_dir(),
                )
                .map_err(spill_to_invalid)?;
                self.fold_into(keys, upstream_names, &mut set)
                    .map_err(spill_to_invalid)?;
                set.into_memory().map_err(spill_to_invalid)
            }
        }
    }

    /// Validates the output and folds it into the batch's key set (0.2 and 0.3: row
    /// by row, no intermediate distinct step).
    pub fn fold_into(
        self,
        keys: &[crate::config::KeyColumn],
        upstream_names: &[&str],
        set: &mut crate::affected::KeySet,
    ) -> Result<(), crate::affected::SpillError> {
        use crate::affected::{InvalidKeys, KeysPart};
        let parts = match self {
            Output::Combined(ipc) => {
                return set.add(crate::affected::collect(&ipc, keys, upstream_names)?)
            }
            Output::PerUpstream(parts) => crate::affected::decode_parts(
                parts.into_iter().filter(|(_, b)| !b.is_empty()).collect(),
            )?,
            Output::Columns(parts) => parts
                .into_iter()
                .map(|(upstream, c)| {
                    let b =
                        super::columns::from_wit(c.0).map_err(|source| InvalidKeys::NotArrow {
                            part: Some(upstream.clone()),
                            source,
                        })?;
                    Ok(KeysPart {
                        upstream,
                        schema: b.schema(),
                        batches: vec![b],
                    })
                })
                .collect::<Result<Vec<_>, InvalidKeys>>()?,
        };
        crate::affected::fold_parts(&parts, keys, upstream_names, set)
    }
}

/// A key-set failure outside a batch's set (no spill there): the keys' own error.
fn spill_to_invalid(e: crate::affected::SpillError) -> crate::affected::InvalidKeys {
    match e {
        crate::affected::SpillError::Keys(k) => k,
        other => crate::affected::InvalidKeys::Malformed {
            detail: other.to_string(),
        },
    }
}
