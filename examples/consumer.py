"""A downstream job in Python reading a dlink-rt link table directly (delta-rs + polars).

    python examples/consumer.py LINK_TABLE PIPELINE CONSUMER [--ack]

prints the distinct keys of the batches after CONSUMER's position as JSON lines, then
(with --ack) records that it is done with them. The position is the link table's Delta
application transaction `dlink-consumer:<CONSUMER>` (what `dlink-rt ack` writes);
`dlink-rt:<PIPELINE>` is the newest committed batch, and `dlink-retention:<PIPELINE>`
the last batch `dlink-rt compact` removed (a position before it is an error, never a
silent gap). The ack is one Delta commit with
no data: a concurrent ack of the same consumer conflicts, others go through.
Needs `pip install deltalake polars pyarrow` (bench/peer/requirements.txt).
"""

import json
import sys

import polars as pl
from deltalake import CommitProperties, DeltaTable, Transaction


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    link, pipeline, consumer = argv[:3]
    ack = "--ack" in argv[3:]
    table = DeltaTable(link)
    position = table.transaction_version(f"dlink-consumer:{consumer}") or 0
    newest = table.transaction_version(f"dlink-rt:{pipeline}") or 0
    removed = table.transaction_version(f"dlink-retention:{pipeline}") or 0
    if position < removed:
        print(
            f"{consumer}: at batch {position}, but batches {position + 1}..={removed} were removed by retention; "
            f"the oldest batch kept is {removed + 1}. Skip to it with "
            f"`dlink-rt ack <pipeline.toml> --consumer {consumer} --to-earliest`",
            file=sys.stderr,
        )
        return 1
    # The key columns are those before dlink-rt's own columns.
    own = {"dlink_batch_id", "dlink_upstreams", "dlink_change_ts", "dlink_updated_at"}
    keys = [f.name for f in table.schema().fields if f.name not in own]
    window = (
        pl.scan_delta(table)
        .filter((pl.col("dlink_batch_id") > position) & (pl.col("dlink_batch_id") <= newest))
        .group_by(keys)
        .agg(
            pl.col("dlink_upstreams").list.explode(keep_nulls=False, empty_as_null=False).unique().sort(),
            pl.col("dlink_change_ts").max(),
            pl.col("dlink_batch_id").unique().sort().alias("dlink_batches"),
        )
        .sort(keys)
        .collect()
    )
    for row in window.iter_rows(named=True):
        row["dlink_change_ts"] = row["dlink_change_ts"] and row["dlink_change_ts"].isoformat()
        print(json.dumps(row))
    print(f"{consumer}: {window.height} keys of batches {position + 1}..={newest}", file=sys.stderr)
    if ack and newest > position:
        table.create_write_transaction(
            [],
            "append",
            table.schema(),
            commit_properties=CommitProperties(
                custom_metadata={"dlink": json.dumps({"consumer": {"name": consumer, "to_batch": newest}})},
                app_transactions=[Transaction(f"dlink-consumer:{consumer}", newest)],
            ),
        )
        print(f"{consumer}: acknowledged batch {newest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
