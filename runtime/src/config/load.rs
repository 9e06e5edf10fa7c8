//! Loading: the catalog and pipeline files read, `${VAR}`-substituted, resolved
//! against each other and validated, every problem with its file and line.

use super::*;
use crate::storage::StorageOptions;
use file::LinkSection;

/// Resolves a table location: URLs stay, relative paths join `base`.
pub(super) fn resolve_location(base: &Path, value: &str) -> String {
    if value.contains("://") {
        return value.to_string();
    }
    let p = Path::new(value);
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    let abs = std::path::absolute(&joined).unwrap_or(joined);
    normalize(&abs).display().to_string()
}

/// The problem of a local path with a percent-escape in it (`%41`), if any: deltalake
/// 1.1 and its kernel decode a table URL's path twice, so `t_p%41` would be read as
/// `t_pA`, another folder (or none). Such a path is refused rather than read wrong.
pub(super) fn escaped_local_path(location: &str) -> Option<String> {
    if location.contains("://") {
        return None;
    }
    let b = location.as_bytes();
    let at = (0..b.len().saturating_sub(2))
        .find(|&i| b[i] == b'%' && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit())?;
    Some(format!(
        "the local path {location} holds `{}`, which the Delta library reads as a percent-escape \
         (it would open another folder): rename the folder without `%XX`",
        &location[at..at + 3]
    ))
}

/// Removes `.` and `..` components without touching the file system.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// Lower-case letters, digits and `_`, starting with a letter or `_` (the rule for
/// pipeline, upstream and key column names).
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl Catalog {
    /// Loads and validates a catalog file.
    pub fn load(path: &Path) -> Result<Catalog> {
        let src = Source::read(path)?;
        let (file, mut problems): (CatalogFile, _) = src.parse(super::catalog_schema_once())?;
        let mut upstreams = BTreeMap::new();
        let storage = StorageOptions::new(file.storage);
        for (name, e) in file.upstreams {
            if !is_identifier(&name) {
                problems.push(format!(
                    "{}: upstream name '{name}' must be lower-case letters, digits and `_` (it names SQL tables)",
                    src.path.display()
                ));
            }
            let start_version = match &e.start_version {
                v if *v.get_ref() < 0 => {
                    problems.push(src.at(
                        v,
                        format!("upstream '{name}': start_version must be 0 or more"),
                    ));
                    0
                }
                v => *v.get_ref(),
            };
            if e.uri.get_ref().trim().is_empty() {
                problems.push(src.at(&e.uri, format!("upstream '{name}': uri is empty")));
            }
            let uri = resolve_location(&src.dir(), e.uri.get_ref());
            if let Some(problem) = escaped_local_path(&uri) {
                problems.push(src.at(&e.uri, format!("upstream '{name}': {problem}")));
            }
            if let Some(types) = &e.change_types {
                for t in types.get_ref() {
                    if !CHANGE_TYPES.contains(&t.as_str()) {
                        problems.push(src.at(
                            types,
                            format!(
                                "upstream '{name}': unknown change type '{t}'; use {}",
                                CHANGE_TYPES.join(", ")
                            ),
                        ));
                    }
                }
                if !types.get_ref().iter().any(|t| t == "update_preimage") {
                    tracing::warn!(
                        file = %src.path.display(),
                        upstream = %name,
                        "{}: upstream '{name}' drops update_preimage rows: a row whose join column changes \
                         will not affect its old side",
                        src.path.display()
                    );
                }
            }
            upstreams.insert(
                name.clone(),
                Upstream {
                    name,
                    uri,
                    keys: e.keys,
                    start_version,
                    columns: e.columns,
                    filter: e.filter.map(|f| f.into_inner()),
                    change_types: e.change_types.map(|t| t.into_inner()),
                    storage: storage.merged(&StorageOptions::new(e.storage)),
                },
            );
        }
        if file.lookups.memory_mb == 0 {
            problems.push(format!(
                "{}: [lookups] memory_mb must be 1 or more (or index = false to answer lookups by scans)",
                src.path.display()
            ));
        }
        if file.engine.memory_mb == 0 {
            problems.push(format!(
                "{}: [engine] memory_mb must be 1 or more (MiB of a batch's key set before it spills to disk; default {})",
                src.path.display(),
                crate::config::DEFAULT_ENGINE_MEMORY_MB
            ));
        }
        let mut engine = file.engine;
        if let (Some(d), Some(base)) = (engine.spill_dir.as_mut(), src.path.parent()) {
            if d.is_relative() {
                *d = base.join(&*d);
            }
        }
        if !problems.is_empty() {
            return Err(crate::config::ConfigError { problems });
        }
        Ok(Catalog {
            path: src.path,
            upstreams,
            lookups: file.lookups,
            engine,
            storage,
        })
    }
}

impl Pipeline {
    /// Loads a pipeline file and the catalog it names (default: `upstreams.toml`
    /// beside it), and validates both. Reports every problem found.
    pub fn load(path: &Path) -> Result<Pipeline> {
        let src = Source::read(path)?;
        let (file, unknown): (PipelineFile, _) = src.parse(super::pipeline_schema_once())?;
        let catalog_path = src.dir().join(&file.catalog);
        let catalog = Catalog::load(&catalog_path)?;
        Self::resolve(&src, file, &catalog, unknown)
    }

    /// Loads a pipeline file against an already loaded catalog.
    pub fn load_with_catalog(path: &Path, catalog: &Catalog) -> Result<Pipeline> {
        let src = Source::read(path)?;
        let (file, unknown): (PipelineFile, _) = src.parse(super::pipeline_schema_once())?;
        Self::resolve(&src, file, catalog, unknown)
    }

    /// Checks and resolves a read pipeline file; `problems` are those already found
    /// (its unknown keys), reported with the rest.
    fn resolve(
        src: &Source,
        file: PipelineFile,
        catalog: &Catalog,
        mut problems: Vec<String>,
    ) -> Result<Pipeline> {
        let name = file.name.get_ref().clone();
        if let Some(problem) =
            escaped_local_path(&resolve_location(&src.dir(), file.link.uri.get_ref()))
        {
            problems.push(src.at(&file.link.uri, format!("[link] uri: {problem}")));
        }
        if !is_identifier(&name) {
            problems.push(src.at(
                &file.name,
                format!("name '{name}' must be lower-case letters, digits and `_`"),
            ));
        }
        let (upstreams, lookups) = tables(src, &file, catalog, &mut problems);
        let batch_size = match &file.batch_size {
            b if *b.get_ref() < 1 => {
                problems.push(src.at(
                    b,
                    "batch_size must be 1 or more (versions per upstream per batch)",
                ));
                1
            }
            b => *b.get_ref(),
        };
        if let Some(r) = &file.max_batch_rows {
            if *r.get_ref() == 0 {
                problems.push(src.at(
                    r,
                    "max_batch_rows must be 1 or more (or left out for no budget)",
                ));
            }
        }
        if let Some(r) = &file.chunk_rows {
            if *r.get_ref() == 0 {
                problems.push(src.at(
                    r,
                    "chunk_rows must be 1 or more (change rows per plugin call; default 65536)",
                ));
            }
        }
        let derivation_line = match (&file.plugin, &file.sql) {
            (Some(p), _) => src.line(p.path.span().start),
            (None, Some(q)) => src.line(q.query.span().start),
            (None, None) => 1,
        };
        let derivation = derivation(src, &file, catalog, &mut problems)?;
        let keys = key_columns(src, &file.link, &mut problems);
        let (retain, compact_every) = retention(src, &file.link, &mut problems);
        if !problems.is_empty() {
            return Err(crate::config::ConfigError { problems });
        }
        Ok(Pipeline {
            name,
            file: src.path.clone(),
            enabled: file.enabled,
            upstreams,
            lookups,
            batch_size,
            max_batches: file.max_batches,
            max_batch_rows: file.max_batch_rows.as_ref().map(|s| *s.get_ref()),
            chunk_rows: file
                .chunk_rows
                .as_ref()
                .map_or(DEFAULT_CHUNK_ROWS, |s| *s.get_ref()),
            derivation,
            derivation_line,
            link_uri: resolve_location(&src.dir(), file.link.uri.get_ref()),
            keys,
            link_mode: file.link.mode.map(|m| m.into_inner()),
            consumers: file.link.consumers.clone(),
            retain,
            compact_every,
            merge_small_files: file.link.merge_small_files,
            lookup_settings: catalog.lookups,
            engine: catalog.engine.clone(),
            link_storage: catalog
                .storage
                .merged(&StorageOptions::new(file.link.storage.clone())),
        })
    }
}

/// The pipeline's upstreams and lookup tables, each found in the catalog and listed
/// once.
fn tables(
    src: &Source,
    file: &PipelineFile,
    catalog: &Catalog,
    problems: &mut Vec<String>,
) -> (Vec<Upstream>, Vec<Upstream>) {
    let known = || {
        catalog
            .upstreams
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut seen = BTreeSet::new();
    let mut lookup_table = |n: &Spanned<String>, what: &str, problems: &mut Vec<String>| {
        if !seen.insert(n.get_ref().clone()) {
            problems.push(src.at(n, format!("{what} '{}' is listed twice", n.get_ref())));
            return None;
        }
        match catalog.upstreams.get(n.get_ref()) {
            Some(u) => Some(u.clone()),
            None => {
                problems.push(src.at(
                    n,
                    format!(
                        "{what} '{}' is not in the catalog {}{}; add it there or use one of: {}",
                        n.get_ref(),
                        catalog.path.display(),
                        super::did_you_mean(n.get_ref(), catalog.upstreams.keys())
                            .map_or_else(String::new, |m| format!(" (did you mean '{m}'?)")),
                        known()
                    ),
                ));
                None
            }
        }
    };
    let upstreams: Vec<Upstream> = file
        .upstreams
        .get_ref()
        .iter()
        .filter_map(|n| lookup_table(n, "upstream", problems))
        .collect();
    if file.upstreams.get_ref().is_empty() {
        problems.push(src.at(
            &file.upstreams,
            "`upstreams` is empty: list at least one upstream",
        ));
    }
    let lookups: Vec<Upstream> = file
        .lookups
        .iter()
        .filter_map(|n| lookup_table(n, "lookup table", problems))
        .collect();
    (upstreams, lookups)
}

/// The pipeline's derivation: its `[plugin]` or its `[sql]` query (exactly one).
fn derivation(
    src: &Source,
    file: &PipelineFile,
    catalog: &Catalog,
    problems: &mut Vec<String>,
) -> Result<Derivation> {
    let none = || Derivation::Sql {
        query: String::new(),
    };
    Ok(match (&file.plugin, &file.sql) {
        (Some(plugin), None) => {
            Derivation::Plugin(plugin::resolve(src, plugin, &catalog.storage, problems)?)
        }
        (None, Some(sql)) => {
            if sql.query.get_ref().trim().is_empty() {
                problems.push(src.at(&sql.query, "[sql] query is empty"));
            }
            Derivation::Sql {
                query: sql.query.get_ref().clone(),
            }
        }
        (Some(_), Some(_)) => {
            problems.push(src.at(
                &file.name,
                "the pipeline has both [plugin] and [sql]: keep the one that derives its keys",
            ));
            none()
        }
        (None, None) => {
            problems.push(src.at(
                &file.name,
                "the pipeline has neither [plugin] (a .wasm path) nor [sql] (a query): add one",
            ));
            none()
        }
    })
}

/// `[link] keys`: at least one, each an identifier not starting with `dlink_`, once.
fn key_columns(src: &Source, link: &LinkSection, problems: &mut Vec<String>) -> Vec<KeyColumn> {
    let mut keys = Vec::new();
    let mut key_names = BTreeSet::new();
    for k in link.keys.get_ref() {
        let n = k.name.get_ref();
        if !is_identifier(n) || n.starts_with("dlink_") {
            problems.push(src.at(
                &k.name,
                format!("key column '{n}' must be lower-case letters, digits and `_`, not starting with `dlink_`"),
            ));
        }
        if !key_names.insert(n.clone()) {
            problems.push(src.at(&k.name, format!("key column '{n}' is listed twice")));
        }
        keys.push(KeyColumn {
            name: n.clone(),
            ty: k.ty,
        });
    }
    if keys.is_empty() {
        problems.push(src.at(
            &link.keys,
            "[link] keys is empty: declare at least one key column, e.g. keys = [{ name = \"id\", type = \"long\" }]",
        ));
    }
    keys
}

/// `[link] retain` and `compact_every`.
fn retention(
    src: &Source,
    link: &LinkSection,
    problems: &mut Vec<String>,
) -> (Option<Retain>, Option<std::time::Duration>) {
    let retain = match &link.retain {
        None => None,
        Some(r) => match r.get_ref() {
            file::RetainSpec::Batches(n) if *n >= 1 => Some(Retain::Batches(*n)),
            file::RetainSpec::Batches(n) => {
                problems.push(src.at(r, format!("[link] retain = {n}: keep at least 1 batch, or give a duration such as \"30d\"")));
                None
            }
            file::RetainSpec::Age(text) => match humantime::parse_duration(text) {
                Ok(d) => Some(Retain::Age(d)),
                Err(e) => {
                    problems.push(src.at(r, format!("[link] retain = \"{text}\": {e}; give a duration such as \"30d\" or \"12h\", or a number of batches")));
                    None
                }
            },
        },
    };
    let compact_every = match &link.compact_every {
        None => None,
        Some(c) => match humantime::parse_duration(c.get_ref()) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                problems.push(src.at(c, "[link] compact_every must be longer than 0s"));
                None
            }
            Err(e) => {
                problems.push(src.at(
                    c,
                    format!(
                        "[link] compact_every = \"{}\": {e}; give a duration such as \"1h\"",
                        c.get_ref()
                    ),
                ));
                None
            }
        },
    };
    (retain, compact_every)
}
