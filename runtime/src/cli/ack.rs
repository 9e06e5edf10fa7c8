//! `dlink-rt ack <pipeline.toml> --consumer NAME (--batch N [--force] | --to-earliest)`

use std::path::PathBuf;
use std::process::ExitCode;

use dlink_rt::config::Pipeline;
use dlink_rt::consumer::Consumer;
use dlink_rt::Error;

/// Records that a consumer is done with every batch up to N (one Delta commit).
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("to").required(true).args(["batch", "to_earliest"])))]
pub struct AckArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// The consumer.
    #[arg(long, value_name = "NAME")]
    pub consumer: String,
    /// The last batch done (`keys --consumer` prints it).
    #[arg(long, value_name = "N")]
    pub batch: Option<i64>,
    /// Allow moving the position back (to read batches again).
    #[arg(long, requires = "batch")]
    pub force: bool,
    /// Skip to the oldest batch retention kept (for a consumer that fell behind it:
    /// the keys of the removed batches are not read).
    #[arg(long)]
    pub to_earliest: bool,
}

pub async fn ack(args: AckArgs) -> ExitCode {
    let run = async {
        let pipeline = Pipeline::load(&args.pipeline)?;
        let registered = pipeline.consumers.contains(&args.consumer);
        let c = Consumer::new(pipeline, &args.consumer)?;
        let (before, after) = match args.batch {
            Some(batch) => (c.ack(batch, args.force).await?, batch),
            None => c.ack_to_earliest().await?,
        };
        if before == after {
            outln!(
                "consumer '{}': stays at batch {before} (nothing older than it was removed)",
                args.consumer
            );
        } else {
            outln!(
                "consumer '{}': batch {before} -> batch {after}",
                args.consumer
            );
        }
        if !registered {
            say!(
                "note: '{}' is not in [link] consumers of {}: its position is kept, but retention \
                 does not wait for it and `dlink-rt consumers` does not list it; add it there to \
                 register it",
                args.consumer,
                args.pipeline.display()
            );
        }
        Ok::<(), Error>(())
    };
    super::exit_code(run.await)
}
