//! Keeping storage options' values out of every log line, whoever writes it.
//!
//! dlink-rt's own messages never print an option's value, but the libraries under it
//! do at debug level (deltalake's S3 backend prints its object store, credentials
//! included; HTTP clients print request URLs with `user:password@`). Rather than
//! filtering their targets (and losing their debug output), the log writer replaces
//! every value of every [`StorageOptions`](super::StorageOptions) the process built,
//! and the user info of any URL, with `***` before a line reaches stderr.

use std::io::Write;
use std::sync::RwLock;

/// Values to hide, registered as storage options are built.
static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Whether `value` is worth hiding: longer than 3 characters and not a flag
/// (`true`/`false` would blank every boolean of every line).
pub(super) fn is_secret(value: &str) -> bool {
    value.len() > 3 && !value.eq_ignore_ascii_case("true") && !value.eq_ignore_ascii_case("false")
}

/// Remembers `values` to hide them from every log line from now on.
pub(super) fn register<'a>(values: impl Iterator<Item = &'a str>) {
    let mut s = SECRETS.write().unwrap_or_else(|p| p.into_inner());
    for v in values.filter(|v| is_secret(v)) {
        if !s.iter().any(|known| known == v) {
            s.push(v.to_string());
        }
    }
    // Longest first, so a value that contains another is hidden whole.
    s.sort_by_key(|v| std::cmp::Reverse(v.len()));
}

/// `text` with every registered value and every URL's user info hidden.
pub fn redact_line(text: &str) -> String {
    let mut out = hide_user_info(text);
    for v in SECRETS.read().unwrap_or_else(|p| p.into_inner()).iter() {
        if out.contains(v.as_str()) {
            out = out.replace(v.as_str(), "***");
        }
    }
    out
}

/// `scheme://user:password@host` → `scheme://***@host`, for every URL in `text`.
fn hide_user_info(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority ends at the first '/', whitespace, quote or bracket.
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || "\"'<>()[]{},".contains(c))
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(userinfo_end) => {
                out.push_str("***");
                rest = &tail[userinfo_end..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

/// A `tracing` writer to stderr that passes every line through [`redact_line`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RedactingStderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RedactingStderr {
    type Writer = RedactingStderr;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingStderr
    }
}

impl Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(redact_line(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Sets up the process's logs on stderr (what `dlink-rt` and `dlink-bench` call first):
/// `filter` (`--log`, `DLINK_LOG`) or warnings, one JSON object per event with `json`
/// (its fields as keys, for log shippers), storage secrets redacted, colour only when
/// stderr is a terminal and `NO_COLOR` is not set. A bare level in the filter (`info`,
/// `debug`) is dlink-rt's own: the libraries under it stay at warnings unless the
/// filter names them (`info,deltalake_core=debug`), so that `--log info` shows
/// dlink-rt's events, not deltalake's internals (see [`log_filter`]). deltalake's MERGE
/// warns about a missing file metric on every commit, and its commit loop logs a lost
/// race (which dlink-rt handles and reports itself, with the pipeline and batch) as an
/// ERROR: both are quieter by default.
pub fn init_logs(json: bool, filter: Option<&str>) {
    let default = || tracing_subscriber::EnvFilter::new(log_filter("warn"));
    let filter = match filter {
        Some(f) => tracing_subscriber::EnvFilter::try_new(log_filter(f)).unwrap_or_else(|e| {
            eprintln!(
                "warning: --log / DLINK_LOG '{f}' is not a log filter ({e}); showing warnings"
            );
            default()
        }),
        None => default(),
    };
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(RedactingStderr);
    if json {
        logs.json().flatten_event(true).init();
    } else {
        logs.init();
    }
}

/// The crates whose events a bare level of `--log` is about.
const OWN_TARGETS: [&str; 2] = ["dlink_rt", "dlink_bench"];

/// `--log`'s filter as given to `tracing`: a bare level (a directive without a target)
/// applies to dlink-rt's own crates, other crates stay at `warn` unless a directive
/// names them, and deltalake's two noisy events stay quiet unless named.
pub fn log_filter(given: &str) -> String {
    let directives: Vec<&str> = given
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    let is_bare = |d: &&str| !d.contains('=') && !d.contains('[') && !d.contains(':');
    let mut out = vec!["warn".to_string()];
    for d in &directives {
        if is_bare(d) {
            // Not for a crate of ours that a directive names itself.
            let own = OWN_TARGETS
                .iter()
                .filter(|t| !directives.iter().any(|o| o.starts_with(*t) && !is_bare(o)));
            out.extend(own.map(|t| format!("{t}={d}")));
        } else {
            out.push(d.to_string());
        }
    }
    let names = |target: &str| directives.iter().any(|d| d.starts_with(target));
    for quiet in [
        "deltalake_core::operations::merge=error",
        "deltalake_core::kernel::transaction=off",
    ] {
        let target = quiet.split('=').next().unwrap_or(quiet);
        if !names(target) && !names("deltalake_core=") && !names("deltalake_core,") {
            out.push(quiet.to_string());
        }
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_level_is_dlink_rts_and_named_crates_keep_theirs() {
        let f = log_filter("info");
        assert!(f.starts_with("warn,dlink_rt=info,dlink_bench=info"), "{f}");
        assert!(f.contains("deltalake_core::kernel::transaction=off"), "{f}");
        let f = log_filter("debug,deltalake_core=trace");
        assert!(
            f.contains("dlink_rt=debug") && f.contains("deltalake_core=trace"),
            "{f}"
        );
        assert!(!f.contains("transaction=off"), "named deltalake_core: {f}");
        let f = log_filter("warn,dlink_rt=debug");
        assert_eq!(
            f,
            "warn,dlink_bench=warn,dlink_rt=debug,\
             deltalake_core::operations::merge=error,deltalake_core::kernel::transaction=off"
        );
        // Every filter it makes is one tracing takes.
        for given in [
            "info",
            "debug",
            "trace,hyper=info",
            "off",
            "warn,dlink_rt::engine=trace",
        ] {
            let f = log_filter(given);
            assert!(
                tracing_subscriber::EnvFilter::try_new(&f).is_ok(),
                "{given} -> {f}"
            );
        }
    }

    #[test]
    fn user_info_of_urls_is_hidden() {
        assert_eq!(
            hide_user_info("endpoint: Some(\"http://user:pw@host:9000/\") and s3://b/k"),
            "endpoint: Some(\"http://***@host:9000/\") and s3://b/k"
        );
        assert_eq!(hide_user_info("no url here"), "no url here");
        assert_eq!(hide_user_info("a@b c://x@y"), "a@b c://***@y");
        assert_eq!(
            hide_user_info("http://h/p@q"),
            "http://h/p@q",
            "an @ in the path stays"
        );
    }

    #[test]
    fn registered_values_are_hidden_but_flags_are_not() {
        register(["AKIA-test-key-id-1234", "true", "abc", "AKIA-test"].into_iter());
        let line = redact_line("key_id: AKIA-test-key-id-1234, allow_http: true, abc");
        assert_eq!(line, "key_id: ***, allow_http: true, abc");
    }
}
