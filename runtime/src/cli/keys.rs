//! `dlink-rt keys <pipeline.toml> (--since-batch N | --since 2h|TIME) [--format ..] [--out PATH]`

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use deltalake::arrow::array::{ArrayRef, RecordBatch, StringArray};
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use deltalake::arrow::util::display::{ArrayFormatter, FormatOptions};
use dlink_rt::config::Pipeline;
use dlink_rt::consumer::{self, Since, Window};
use dlink_rt::Error;

use super::plural;

/// Prints the distinct affected keys of a window of batches, with their causes.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("window").required(true).args(["since_batch", "since", "consumer"])))]
pub struct KeysArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// The batches after batch N (0: all).
    #[arg(long, value_name = "N")]
    pub since_batch: Option<i64>,
    /// The batches committed since: a duration back from now (90s, 15m, 2h, 7d) or an
    /// RFC 3339 time (2026-12-01T00:00:00Z).
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// The batches after consumer NAME's acknowledged batch (`dlink-rt ack`).
    #[arg(long, value_name = "NAME")]
    pub consumer: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Write to this file instead of stdout (required for parquet).
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    /// One JSON object per line.
    Json,
    Csv,
    Parquet,
}

pub async fn keys(args: KeysArgs) -> ExitCode {
    super::exit_code(keys_inner(&args).await)
}

async fn keys_inner(args: &KeysArgs) -> Result<(), Error> {
    if args.format == Format::Parquet && args.out.is_none() {
        return Err(Error::config(
            "--format parquet writes a file: give --out PATH",
        ));
    }
    let pipeline = Pipeline::load(&args.pipeline)?;
    let (w, since) = match (&args.since_batch, &args.since, &args.consumer) {
        (Some(n), _, _) => (
            consumer::read_window(&pipeline, &Since::Batch(*n)).await?,
            Since::Batch(*n),
        ),
        (None, Some(text), _) => {
            let t = consumer::parse_since(text, chrono::Utc::now()).map_err(Error::config)?;
            let since = Since::Time(t);
            (consumer::read_window(&pipeline, &since).await?, since)
        }
        (None, None, Some(name)) => {
            // The position and the window from one snapshot of the link table.
            let w = consumer::Consumer::new(pipeline.clone(), name)?
                .next_keys()
                .await?;
            let since = Since::Batch(w.after_batch.unwrap_or(0));
            (w, since)
        }
        (None, None, None) => {
            return Err(Error::config(
                "give --since-batch N, --since WHEN or --consumer NAME",
            ))
        }
    };
    let bytes = render(&w, args.format).map_err(|e| Error::Other(format!("{e}")))?;
    match &args.out {
        Some(path) => write_file(path, &bytes)?,
        None => match std::io::stdout().write_all(&bytes) {
            // A reader that stopped early (`| head`) is not a failure.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            r => r.map_err(|e| Error::Other(format!("writing to stdout: {e}")))?,
        },
    }
    match since {
        Since::Batch(n) if n >= w.through_batch => say!(
            "{}: nothing new: no batch after batch {n} (link table version {}; {} of {} files read)",
            pipeline.name, w.link_version, w.files_scanned, w.files_total
        ),
        _ => {
            let first = match since {
                Since::Batch(n) if n + 1 == w.through_batch => format!("batch {}", n + 1),
                Since::Batch(n) => format!("batches {} to {}", n + 1, w.through_batch),
                Since::Time(t) => {
                    format!("batches since {} up to {}", t.to_rfc3339(), w.through_batch)
                }
            };
            say!(
                "{}: {} of {first} (link table version {}; {} of {} files read)",
                pipeline.name,
                plural(w.len(), "key", "keys"),
                w.link_version,
                w.files_scanned,
                w.files_total
            );
        }
    }
    if let (Some(name), Since::Batch(n)) = (&args.consumer, &since) {
        if w.through_batch > *n {
            say!(
                "when they are done: dlink-rt ack {} --consumer {name} --batch {}",
                args.pipeline.display(),
                w.through_batch
            );
        }
    }
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    std::fs::write(path, bytes).map_err(|e| Error::Other(format!("{}: {e}", path.display())))
}

fn render(w: &Window, format: Format) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
    let mut out = Vec::new();
    match format {
        // No key: no table (an empty one prints as `++ / ++`).
        Format::Table if w.is_empty() => {}
        Format::Table => {
            let text = deltalake::arrow::util::pretty::pretty_format_batches(&w.keys)?;
            out.extend_from_slice(format!("{text}\n").as_bytes());
        }
        Format::Json => {
            let mut writer = deltalake::arrow::json::LineDelimitedWriter::new(&mut out);
            for b in &w.keys {
                writer.write(b)?;
            }
            writer.finish()?;
        }
        Format::Csv => {
            let mut writer = deltalake::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            for b in &w.keys {
                writer.write(&flat(b)?)?;
            }
        }
        Format::Parquet => {
            let mut writer =
                deltalake::parquet::arrow::ArrowWriter::try_new(&mut out, w.schema.clone(), None)?;
            for b in &w.keys {
                writer.write(b)?;
            }
            writer.close()?;
        }
    }
    Ok(out)
}

/// `b` with its list columns as text (`[a, b]`), for CSV.
fn flat(b: &RecordBatch) -> Result<RecordBatch, deltalake::arrow::error::ArrowError> {
    let opts = FormatOptions::default();
    let mut fields = Vec::new();
    let mut cols: Vec<ArrayRef> = Vec::new();
    for (f, c) in b.schema().fields().iter().zip(b.columns()) {
        if matches!(f.data_type(), DataType::List(_) | DataType::LargeList(_)) {
            let fmt = ArrayFormatter::try_new(c.as_ref(), &opts)?;
            let text: StringArray = (0..c.len())
                .map(|i| (!c.is_null(i)).then(|| fmt.value(i).to_string()))
                .collect();
            fields.push(Field::new(f.name(), DataType::Utf8, true));
            cols.push(Arc::new(text));
        } else {
            fields.push(f.as_ref().clone());
            cols.push(c.clone());
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)
}
