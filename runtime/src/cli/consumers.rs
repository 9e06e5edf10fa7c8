//! `dlink-rt consumers <pipeline.toml> [--json]`

use std::path::PathBuf;
use std::process::ExitCode;

use dlink_rt::config::Pipeline;
use dlink_rt::consumer;
use dlink_rt::Error;

/// Lists the registered consumers (`[link] consumers`) with their positions and lag.
#[derive(clap::Args, Debug)]
pub struct ConsumersArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// One JSON object.
    #[arg(long)]
    pub json: bool,
}

pub async fn consumers(args: ConsumersArgs) -> ExitCode {
    let run = async {
        let p = Pipeline::load(&args.pipeline)?;
        let list = consumer::statuses(&p).await?;
        if args.json {
            let v = serde_json::json!({"pipeline": p.name, "consumers": list});
            outln!("{v}");
        } else if list.is_empty() {
            outln!(
                "{}: no registered consumers (add them to the pipeline file: [link] consumers = [\"NAME\"])",
                p.name
            );
        } else {
            outln!(
                "{:<20} {:>10} {:>10} {:>12}",
                "consumer",
                "position",
                "lag",
                "lag (s)"
            );
            for c in &list {
                outln!(
                    "{:<20} {:>10} {:>10} {:>12.1}{}",
                    c.name,
                    c.position,
                    c.lag_batches,
                    c.lag_seconds,
                    if c.behind_retention {
                        "  behind retention: `ack --to-earliest`"
                    } else {
                        ""
                    }
                );
            }
        }
        Ok::<(), Error>(())
    };
    super::exit_code(run.await)
}
