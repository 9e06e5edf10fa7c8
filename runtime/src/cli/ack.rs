//! `dlink-rt ack <pipeline.toml> --consumer NAME --batch N [--force]`

use std::path::PathBuf;
use std::process::ExitCode;

use dlink_rt::config::Pipeline;
use dlink_rt::consumer::Consumer;
use dlink_rt::Error;

/// Records that a consumer is done with every batch up to N (one Delta commit).
#[derive(clap::Args, Debug)]
pub struct AckArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// The consumer.
    #[arg(long, value_name = "NAME")]
    pub consumer: String,
    /// The last batch done (`keys --consumer` prints it).
    #[arg(long, value_name = "N")]
    pub batch: i64,
    /// Allow moving the position back (to read batches again).
    #[arg(long)]
    pub force: bool,
}

pub async fn ack(args: AckArgs) -> ExitCode {
    let run = async {
        let pipeline = Pipeline::load(&args.pipeline)?;
        let c = Consumer::new(pipeline, &args.consumer)?;
        let before = c.ack(args.batch, args.force).await?;
        println!(
            "consumer '{}': batch {before} -> batch {}",
            args.consumer, args.batch
        );
        Ok::<(), Error>(())
    };
    super::exit_code(run.await)
}
