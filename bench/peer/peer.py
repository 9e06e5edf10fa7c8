#!/usr/bin/env python3
"""The "Python peer": the four example pipelines of dlink-rt, written the way a data team
would write them without dlink-rt, with delta-rs (`deltalake`) and polars.

For each pipeline, for each upstream Delta table: read the Change Data Feed from the
version after the last one processed up to the table's version at the start of the run,
derive the pipeline's affected keys with polars, MERGE them into the pipeline's link table
STATE/links/<pipeline>, then MERGE the new last versions into STATE/progress.

    python peer.py --data DATA --state STATE [--pipelines sp_affiliation,emp_dept]
                   [--dump-keys FILE]

Prints one JSON object on stdout:
    {"seconds": ..., "pipelines": {"<name>": {"keys": ..., "change_rows": ...}}}
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

import polars as pl
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

PROGRESS_SCHEMA = pa.schema(
    [
        pa.field("pipeline", pa.string(), nullable=False),
        pa.field("upstream", pa.string(), nullable=False),
        pa.field("last_version", pa.int64(), nullable=False),
    ]
)


class PeerError(Exception):
    """A failure with a message fit for the user (no traceback)."""


# ---------------------------------------------------------------------------
# Upstream tables: opened once per run, pinned at their version at the start of the run.
# ---------------------------------------------------------------------------


class Upstreams:
    def __init__(self, data: str):
        self.data = data
        self._tables: dict[str, DeltaTable] = {}

    def path(self, name: str) -> str:
        return os.path.join(self.data, name)

    def open(self, name: str) -> DeltaTable:
        """The table as of the start of the run (a DeltaTable does not move by itself)."""
        if name not in self._tables:
            path = self.path(name)
            if not DeltaTable.is_deltatable(path):
                raise PeerError(f"upstream table {name!r} not found: {path} is not a Delta table")
            dt = DeltaTable(path)
            if dt.metadata().configuration.get("delta.enableChangeDataFeed", "false").lower() != "true":
                raise PeerError(
                    f"upstream table {name!r} at {path} does not have the Change Data Feed enabled"
                )
            self._tables[name] = dt
        return self._tables[name]

    def version(self, name: str) -> int:
        return self.open(name).version()

    def as_of(self, name: str, version: int) -> DeltaTable:
        """The table time-travelled to `version`."""
        dt = self.open(name)
        if dt.version() == version:
            return dt  # the snapshot opened at the start of the run is that version
        return DeltaTable(self.path(name), version=version)

    def changes(self, name: str, start: int, end: int, columns: list[str]) -> pl.DataFrame:
        """Every CDF row of versions [start, end] (all change types), only `columns`."""
        reader = self.open(name).load_cdf(
            starting_version=start, ending_version=end, columns=columns
        )
        # pl.DataFrame(), not pl.from_arrow(): the latter makes a Series of a stream.
        return pl.DataFrame(reader)

    def lookup(self, name: str, version: int, columns: list[str]) -> pl.LazyFrame:
        """The table as of `version`, only `columns`, as a lazy polars scan."""
        # pl.scan_delta(path, version=...) would reopen the log; a DeltaTable passed in
        # is read at its own version (a `version=` argument next to it is ignored).
        return pl.scan_delta(self.as_of(name, version)).select(columns)


# ---------------------------------------------------------------------------
# The four pipelines.
# ---------------------------------------------------------------------------


@dataclass
class Window:
    """What a pipeline reads of one upstream in this run."""

    start: int
    end: int

    @property
    def empty(self) -> bool:
        return self.start > self.end


@dataclass
class Pipeline:
    name: str
    key: str
    upstreams: list[str]
    derive: Callable[["Upstreams", dict[str, Window]], tuple[pl.Series, int]]


def _keys_of(up: Upstreams, table: str, w: Window, column: str, alias: str) -> tuple[pl.DataFrame, int]:
    """Distinct values of `column` in the changes of `table` (renamed to `alias`), row count."""
    if w.empty:
        return pl.DataFrame(schema={alias: pl.Int64}), 0
    ch = up.changes(table, w.start, w.end, [column])
    return ch.select(pl.col(column).alias(alias)).unique(), ch.height


def union_of_changes(table_a: str, col_a: str, table_b: str, col_b: str, key: str):
    """Keys = `col_a` of every change row of `table_a` ∪ `col_b` of every change row of `table_b`."""

    def derive(up: Upstreams, windows: dict[str, Window]) -> tuple[pl.Series, int]:
        a, na = _keys_of(up, table_a, windows[table_a], col_a, key)
        b, nb = _keys_of(up, table_b, windows[table_b], col_b, key)
        return pl.concat([a, b]).unique().drop_nulls().get_column(key), na + nb

    return derive


def changes_and_lookup(
    own: str,
    own_key: str,
    other: str,
    other_col: str,
    lookup_col: str,
    key: str,
):
    """Keys = `own_key` of every change row of `own` ∪ `key` of every row of `own`, as of
    its version read in this run, whose `lookup_col` is among the `other_col` of the change
    rows of `other`."""

    def derive(up: Upstreams, windows: dict[str, Window]) -> tuple[pl.Series, int]:
        direct, n_own = _keys_of(up, own, windows[own], own_key, key)
        touched, n_other = _keys_of(up, other, windows[other], other_col, lookup_col)
        parts = [direct]
        if touched.height > 0:
            via = (
                up.lookup(own, windows[own].end, [key, lookup_col])
                .filter(pl.col(lookup_col).is_in(touched.get_column(lookup_col).implode()))
                .select(key)
                .unique()
                .collect()
            )
            parts.append(via)
        return pl.concat(parts).unique().drop_nulls().get_column(key), n_own + n_other

    return derive


PIPELINES: dict[str, Pipeline] = {
    p.name: p
    for p in [
        Pipeline(
            "sp_affiliation",
            "diasng_id",
            ["spmaster", "affiliation"],
            union_of_changes("spmaster", "diasng_id", "affiliation", "sp_id", "diasng_id"),
        ),
        Pipeline(
            "pub_authors",
            "pub_id",
            ["publications", "author_publication_link"],
            union_of_changes("publications", "pub_id", "author_publication_link", "pub_id", "pub_id"),
        ),
        Pipeline(
            "emp_dept",
            "emp_id",
            ["employee", "department"],
            changes_and_lookup("employee", "emp_id", "department", "dept_id", "dept_id", "emp_id"),
        ),
        Pipeline(
            "author_pubs",
            "uid",
            ["publications", "author_publication_link"],
            changes_and_lookup(
                "author_publication_link", "uid", "publications", "pub_id", "pub_id", "uid"
            ),
        ),
    ]
}


# ---------------------------------------------------------------------------
# State: the progress table and the link tables.
# ---------------------------------------------------------------------------


class State:
    def __init__(self, root: str):
        self.root = root
        self.progress_path = os.path.join(root, "progress")
        if DeltaTable.is_deltatable(self.progress_path):
            self.progress = DeltaTable(self.progress_path)
        else:
            if os.path.exists(self.progress_path) and os.listdir(self.progress_path):
                raise PeerError(f"{self.progress_path} exists but is not a Delta table")
            os.makedirs(root, exist_ok=True)
            self.progress = DeltaTable.create(self.progress_path, schema=PROGRESS_SCHEMA)
        # polars' native reader, not DeltaTable.to_pyarrow_table(): reading through the
        # pyarrow dataset of deltalake sometimes aborts the interpreter at exit
        # ("terminate called without an active exception", delta-rs #2184).
        df = pl.scan_delta(self.progress).collect()
        self.last: dict[tuple[str, str], int] = {
            (r["pipeline"], r["upstream"]): r["last_version"] for r in df.iter_rows(named=True)
        }

    def last_version(self, pipeline: str, upstream: str) -> int | None:
        return self.last.get((pipeline, upstream))

    def save_progress(self, pipeline: str, versions: dict[str, int]) -> None:
        src = pa.table(
            {
                "pipeline": [pipeline] * len(versions),
                "upstream": list(versions),
                "last_version": list(versions.values()),
            },
            schema=PROGRESS_SCHEMA,
        )
        (
            self.progress.merge(
                src,
                predicate="t.pipeline = s.pipeline AND t.upstream = s.upstream",
                source_alias="s",
                target_alias="t",
            )
            .when_matched_update(updates={"last_version": "s.last_version"})
            .when_not_matched_insert_all()
            .execute()
        )
        for upstream, v in versions.items():
            self.last[(pipeline, upstream)] = v

    def write_keys(self, pipeline: Pipeline, keys: pl.Series) -> int:
        """MERGE the keys into the link table under the next batch id; returns the batch id."""
        path = os.path.join(self.root, "links", pipeline.name)
        exists = DeltaTable.is_deltatable(path)
        link = DeltaTable(path) if exists else None
        batch_id = 1
        if link is not None:
            last = pl.scan_delta(link).select(pl.col("batch_id").max()).collect().item()
            batch_id = (last or 0) + 1
        batch = pl.DataFrame({pipeline.key: keys.cast(pl.Int64)}).with_columns(
            pl.lit(batch_id, dtype=pl.Int64).alias("batch_id"),
            pl.lit(datetime.now(timezone.utc), dtype=pl.Datetime("us", "UTC")).alias("updated_at"),
        )
        if link is None:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            write_deltalake(path, batch.to_arrow(), mode="error")
        else:
            (
                link.merge(
                    batch.to_arrow(),
                    predicate=f"t.{pipeline.key} = s.{pipeline.key}",
                    source_alias="s",
                    target_alias="t",
                )
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute()
            )
        return batch_id


# ---------------------------------------------------------------------------


def run_pipeline(p: Pipeline, up: Upstreams, state: State) -> tuple[dict, list[int]]:
    windows: dict[str, Window] = {}
    for u in p.upstreams:
        last = state.last_version(p.name, u)
        windows[u] = Window(0 if last is None else last + 1, up.version(u))
    if all(w.empty for w in windows.values()):
        return {"keys": 0, "change_rows": 0}, []

    keys, change_rows = p.derive(up, windows)
    if keys.len() > 0:
        state.write_keys(p, keys)
    state.save_progress(p.name, {u: w.end for u, w in windows.items() if not w.empty})
    return {"keys": keys.len(), "change_rows": change_rows}, keys.sort().to_list()


class _ArgParser(argparse.ArgumentParser):
    def error(self, message: str):  # usage errors exit 1 too, like every failure
        self.print_usage(sys.stderr)
        print(f"peer: error: {message}", file=sys.stderr)
        sys.exit(1)


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = _ArgParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="folder holding the upstream Delta tables")
    ap.add_argument("--state", required=True, help="folder of the progress and link tables")
    ap.add_argument(
        "--pipelines",
        default=",".join(PIPELINES),
        help=f"comma-separated pipelines to run (default: all: {','.join(PIPELINES)})",
    )
    ap.add_argument("--dump-keys", metavar="FILE", help="write {pipeline: sorted keys} to FILE")
    return ap.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    names = [n.strip() for n in args.pipelines.split(",") if n.strip()]
    unknown = [n for n in names if n not in PIPELINES]
    if unknown or not names:
        raise PeerError(
            f"unknown pipeline(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(PIPELINES)}"
        )
    if not os.path.isdir(args.data):
        raise PeerError(f"data folder not found: {args.data}")

    t0 = time.perf_counter()
    up = Upstreams(args.data)
    # Every upstream's end version is fixed once, at the start of the run.
    for n in names:
        for u in PIPELINES[n].upstreams:
            up.open(u)
    state = State(args.state)
    report: dict[str, dict] = {}
    dumped: dict[str, list[int]] = {}
    for n in names:
        report[n], dumped[n] = run_pipeline(PIPELINES[n], up, state)
    seconds = time.perf_counter() - t0

    print(json.dumps({"seconds": round(seconds, 6), "pipelines": report}))
    if args.dump_keys:
        with open(args.dump_keys, "w") as f:
            json.dump(dumped, f)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except PeerError as e:
        print(f"peer: error: {e}", file=sys.stderr)
        sys.exit(1)
    except Exception as e:  # a delta-rs / polars / I/O failure
        print(f"peer: error: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
