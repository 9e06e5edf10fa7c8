//! The human-readable table of a bench run.

use super::BenchResult;

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "-".into()
    }
}

/// Bytes as MiB.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// The human-readable table of one run.
pub fn table(r: &BenchResult) -> String {
    let mut out = String::new();
    let mut line = |label: &str, value: String| {
        out.push_str(&format!("  {label:<38} {value}\n"));
    };
    catch_up_lines(r, &mut line);
    reference_lines(r, &mut line);
    out
}

/// The catch-up's lines of [`table`].
fn catch_up_lines(r: &BenchResult, line: &mut impl FnMut(&str, String)) {
    line(
        "generation (not in wall)",
        format!("{:.2} s", r.generation_s),
    );
    line(
        "plugin compile/cache load",
        format!("{:.2} s", r.plugin_compile_s),
    );
    line(
        "catch-up wall",
        format!(
            "{:.3} s  ({} batches, jobs {})",
            r.wall_s, r.batches, r.jobs
        ),
    );
    line(
        "change rows (distinct / per pipeline)",
        format!("{} / {}", r.change_rows, r.change_rows_per_pipeline),
    );
    line(
        "generator's change rows (tables read)",
        r.generated_change_rows.to_string(),
    );
    line("affected keys committed", r.keys.to_string());
    line(
        "change-feed reads",
        format!("{} for {} requested", r.reads_performed, r.reads_requested),
    );
    line(
        "upstream table opens",
        format!(
            "{} for {} requested",
            r.table_opens_performed, r.table_opens_requested
        ),
    );
    line(
        "peak RSS of the catch-up",
        format!(
            "{}{}",
            mib(r.peak_rss_bytes),
            if r.peak_rss_reset {
                ""
            } else {
                " (includes generation)"
            }
        ),
    );
    let s = &r.stages;
    line(
        "  stage open (link table, checkpoint, upstreams)",
        format!("{:.3} s", s.open_s),
    );
    line(
        "  stage plan (sum over batches)",
        format!("{:.3} s", s.plan_s),
    );
    line("  stage read", format!("{:.3} s", s.read_s));
    line("  stage derive", format!("{:.3} s", s.derive_s));
    line("  stage commit", format!("{:.3} s", s.commit_s));
    line(
        "  wall minus stages (overlap makes it < 0)",
        format!(
            "{:.3} s",
            r.wall_s - s.open_s - s.plan_s - s.read_s - s.derive_s - s.commit_s
        ),
    );
}

/// The references' lines of [`table`]: the limit, the derivations and the ratios.
fn reference_lines(r: &BenchResult, line: &mut impl FnMut(&str, String)) {
    let s = &r.stages;
    line(
        "limit: parquet read of change files",
        format!(
            "{:.3} s  ({} files, {}, {} rows; listing {:.3} s)",
            r.limit_read_s,
            r.limit_files,
            mib(r.limit_bytes),
            r.limit_rows,
            r.limit_list_s
        ),
    );
    line(
        "dlink-rt change-feed read, same ranges",
        format!("{:.3} s", r.reference_cdf_read_s),
    );
    line("derive: Wasm plugin", format!("{:.3} s", r.derive_wasm_s));
    line(
        "  host encode / call / host collect",
        format!(
            "{:.3} / {:.3} / {:.3} s",
            r.derive_wasm_encode_s, r.derive_wasm_call_s, r.derive_wasm_collect_s
        ),
    );
    line("derive: native Rust", format!("{:.3} s", r.derive_native_s));
    line(
        "derive: SQL (DataFusion)",
        format!("{:.3} s", r.derive_sql_s),
    );
    line("derivations agree on the keys", r.keys_agree.to_string());
    for (name, a, b) in [
        ("catch-up / limit read", r.wall_s, r.limit_read_s),
        ("stage read / limit read", s.read_s, r.limit_read_s),
        ("Wasm / native", r.derive_wasm_s, r.derive_native_s),
        ("SQL / native", r.derive_sql_s, r.derive_native_s),
    ] {
        line(&format!("ratio {name}"), ratio(a, b));
    }
    line(
        "catch-up per 1k change rows",
        format!("{:.2} ms", r.wall_s * 1e6 / (r.change_rows.max(1) as f64)),
    );
}
