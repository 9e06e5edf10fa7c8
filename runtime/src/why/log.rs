//! What the logs say: upstream commits, the link table's rows of the key and each
//! batch's commit metadata.

use super::*;

// ---- commit logs (pure) ------------------------------------------------------------

pub(super) fn millis_to_rfc3339(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339())
}

pub(super) fn micros_to_rfc3339(us: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_micros(us).map(|t| t.to_rfc3339())
}

/// An upstream commit's version, time and operation from its log entry.
pub(crate) fn upstream_commit(version: i64, commit: &[u8]) -> UpstreamCommit {
    let info = commit_info(commit);
    let get = |k: &str| info.as_ref().and_then(|i| i.get(k));
    let ts = info.as_ref().and_then(commit_millis);
    UpstreamCommit {
        version,
        timestamp: ts.and_then(millis_to_rfc3339),
        operation: get("operation").and_then(Value::as_str).map(String::from),
        operation_parameters: get("operationParameters")
            .filter(|v| v.as_object().is_some_and(|o| !o.is_empty()))
            .cloned(),
        causing_rows: 0,
        note: info
            .is_none()
            .then(|| "the commit has no commitInfo".to_string()),
    }
}

// ---- reading the link table --------------------------------------------------------

/// One row of the key in the link table.
#[derive(Debug, Clone)]
pub(super) struct Reported {
    pub(super) batch_id: i64,
    pub(super) upstreams: Vec<String>,
    pub(super) change_ts: Option<i64>,
    pub(super) updated_at: Option<i64>,
}

/// The rows of `key` in the link table, newest batch first.
pub(super) async fn reported(p: &Pipeline, table: &DeltaTable, key: &Key) -> Result<Vec<Reported>> {
    let err = |e: crate::storage::Cause| Error::from(CommitError::link(p, e));
    let ctx = cdf::session();
    let provider = table.table_provider().await.map_err(|e| err(e.into()))?;
    let mut df = ctx.read_table(provider).map_err(|e| err(e.into()))?;
    if let Some(pred) = key.predicate() {
        df = df.filter(pred).map_err(|e| err(e.into()))?;
    }
    let df = df
        .select_columns(&[BATCH_ID, UPSTREAMS, CHANGE_TS, UPDATED_AT])
        .map_err(|e| err(e.into()))?;
    let batches = df.collect().await.map_err(|e| {
        err(crate::storage::Cause::from(e).doing(format_args!("reading the rows of key {key}")))
    })?;
    let ts_type = DataType::Timestamp(TimeUnit::Microsecond, None);
    let mut out = Vec::new();
    for b in batches {
        let col = |name: &str| {
            b.column_by_name(name)
                .cloned()
                .ok_or_else(|| err(format!("the link table has no column {name}").into()))
        };
        let ids = cast(&col(BATCH_ID)?, &DataType::Int64).map_err(|e| err(e.into()))?;
        let ids = ids.as_primitive::<Int64Type>();
        let ts = |name: &str| -> Result<ArrayRef> {
            let c = cast(&col(name)?, &ts_type).map_err(|e| err(e.into()))?;
            cast(&c, &DataType::Int64).map_err(|e| err(e.into()))
        };
        let change_ts = ts(CHANGE_TS)?;
        let change_ts = change_ts.as_primitive::<Int64Type>();
        let updated = ts(UPDATED_AT)?;
        let updated = updated.as_primitive::<Int64Type>();
        let ups = col(UPSTREAMS)?;
        let ups = ups
            .as_list_opt::<i32>()
            .ok_or_else(|| err(format!("{UPSTREAMS} is not a list").into()))?;
        for i in 0..b.num_rows() {
            let names = if ups.is_null(i) {
                Vec::new()
            } else {
                let v = cast(&ups.value(i), &DataType::Utf8).map_err(|e| err(e.into()))?;
                let v = v.as_string::<i32>();
                (0..v.len()).map(|j| v.value(j).to_string()).collect()
            };
            out.push(Reported {
                batch_id: ids.value(i),
                upstreams: names,
                change_ts: change_ts.is_valid(i).then(|| change_ts.value(i)),
                updated_at: updated.is_valid(i).then(|| updated.value(i)),
            });
        }
    }
    out.sort_by_key(|r| std::cmp::Reverse(r.batch_id));
    out.dedup_by_key(|r| r.batch_id);
    Ok(out)
}

/// The commit metadata of the `wanted` batches, walking the link table's log back from
/// its latest version. Also says whether the walk ran into removed log entries.
pub(super) async fn batch_metas(
    p: &Pipeline,
    table: &DeltaTable,
    wanted: &BTreeSet<i64>,
) -> Result<(HashMap<i64, BatchMeta>, bool)> {
    let mut found = HashMap::new();
    let Some(min) = wanted.first().copied() else {
        return Ok((found, false));
    };
    let latest = table
        .version()
        .map(|v| v as i64)
        .ok_or_else(|| CommitError::link(p, "the link table has no version"))?;
    let log = table.log_store();
    const CHUNK: i64 = 32;
    let mut top = latest;
    while top >= 0 {
        let low = (top - CHUNK + 1).max(0);
        let entries = futures::future::join_all((low..=top).rev().map(|v| {
            let log = log.clone();
            async move { (v, read_entry(&log, v).await) }
        }))
        .await;
        for (v, entry) in entries {
            let bytes = match entry {
                Ok(Some(b)) => b,
                Ok(None) => return Ok((found, true)),
                Err(e) => {
                    return Err(CommitError::link(
                        p,
                        e.doing(format_args!(
                            "cannot read the log entry of link table version {v}"
                        )),
                    )
                    .into())
                }
            };
            if let Some(mut m) = batch_meta(&bytes) {
                if m.batch_id < min {
                    return Ok((found, false));
                }
                if wanted.contains(&m.batch_id) {
                    m.link_version = v;
                    found.insert(m.batch_id, m);
                    if found.len() == wanted.len() {
                        return Ok((found, false));
                    }
                }
            }
        }
        top = low - 1;
    }
    Ok((found, false))
}

/// The log entry of `version`, `None` when it is gone.
pub(super) async fn read_entry(
    log: &LogStoreRef,
    version: i64,
) -> std::result::Result<Option<Vec<u8>>, crate::storage::Cause> {
    let v = u64::try_from(version).map_err(|_| format!("no version {version}"))?;
    log.read_commit_entry(v)
        .await
        .map(|b| b.map(|b| b.to_vec()))
        .map_err(Into::into)
}

/// The upstream commits `start..=end` of `u`, from its log.
pub(super) async fn upstream_commits(
    u: &Upstream,
    start: i64,
    end: i64,
) -> Result<Vec<UpstreamCommit>> {
    let table = crate::storage::builder(&u.uri, &u.storage)
        .map_err(|e| cdf::table_err(u, e))?
        .build()
        .map_err(|e| cdf::table_err(u, e))?;
    let log = table.log_store();
    let entries = futures::future::join_all((start..=end).map(|v| {
        let log = log.clone();
        async move { (v, read_entry(&log, v).await) }
    }))
    .await;
    Ok(entries
        .into_iter()
        .map(|(v, e)| match e {
            Ok(Some(bytes)) => upstream_commit(v, &bytes),
            Ok(None) => UpstreamCommit {
                version: v,
                timestamp: None,
                operation: None,
                operation_parameters: None,
                causing_rows: 0,
                note: Some("its log entry was removed (log retention / cleanup)".into()),
            },
            Err(e) => UpstreamCommit {
                version: v,
                timestamp: None,
                operation: None,
                operation_parameters: None,
                causing_rows: 0,
                note: Some(format!(
                    "its log entry cannot be read: {}",
                    crate::storage::StoreError::new(e, &u.storage)
                )),
            },
        })
        .collect())
}
