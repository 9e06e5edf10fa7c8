"""The `pipeline` resource of sp_affiliation_py (see app.py)."""

from typing import List, Tuple

from componentize_py_types import Err
from wit_world.exports import plugin
from wit_world.imports import types as t

KEY = "diasng_id"
TS = "_commit_timestamp"
INTS = ("int64", "int32", "int16", "int8")


def valid(validity, i):
    """Whether row i holds a value, per the contract's bitmap (absent: every row)."""
    return validity is None or (validity[i >> 3] >> (i & 7)) & 1 == 1


def int_values(column):
    """The values of an integer column as a list of ints."""
    v = column.values
    if isinstance(v, (t.Values_Int64, t.Values_Int32, t.Values_Int16)):
        return list(v.value)
    raise Err(f"column '{column.name}' is not an integer column")


class Pipeline(plugin.Pipeline):
    def __init__(self, roles):
        # (upstream name, column holding the key), in the pipeline file's order.
        self.roles = roles

    @classmethod
    def init(cls, info: t.PipelineInfo) -> Tuple["Pipeline", List[t.Reads]]:
        keys = [(k.name, k.data_type) for k in info.keys]
        if keys != [(KEY, "int64")]:
            shown = ", ".join(f"{n} {ty}" for n, ty in keys)
            raise Err(
                f"pipeline '{info.name}' declares the key ({shown}) in [link] keys, "
                f"but this plugin produces ({KEY} int64)"
            )
        if info.config.strip() not in ("", "{}"):
            raise Err(f"sp_affiliation_py takes no config, got {info.config}")
        if len(info.upstreams) != 2:
            raise Err(
                f"sp_affiliation_py reads 2 upstreams (staff, affiliations), "
                f"pipeline '{info.name}' lists {len(info.upstreams)}"
            )
        roles = [(info.upstreams[0].name, KEY), (info.upstreams[1].name, "sp_id")]
        for (name, column), table in zip(roles, info.upstreams):
            types = {f.name: f.data_type for f in table.fields}
            if types.get(column) not in INTS:
                raise Err(
                    f"upstream '{name}' has no integer column '{column}' "
                    f"(its columns: {', '.join(types)})"
                )
        reads = [t.Reads(table=name, columns=[column]) for name, column in roles]
        return cls(roles), reads

    def derive(self, batch: t.Batch) -> List[t.UpstreamKeys]:
        by_name = {u.name: u.changes for u in batch.upstreams}
        out = []
        for name, column in self.roles:
            changes = by_name.get(name)
            if changes is None or changes.num_rows == 0:
                continue
            columns = {c.name: c for c in changes.columns}
            ids, ts = columns[column], columns[TS]
            values = int_values(ids)
            stamps = list(ts.values.value)
            if ids.validity is None and ts.validity is None:
                keys, times, time_validity = values, stamps, None
            else:
                # A null id (a deleted join side) is no key; a null time stays null.
                rows = [i for i in range(changes.num_rows) if valid(ids.validity, i)]
                keys = [values[i] for i in rows]
                times = [stamps[i] for i in rows]
                bits = bytearray((len(rows) + 7) // 8)
                for j, i in enumerate(rows):
                    if valid(ts.validity, i):
                        bits[j >> 3] |= 1 << (j & 7)
                time_validity = bytes(bits)
            out.append(
                t.UpstreamKeys(
                    upstream=name,
                    keys=t.RecordBatch(
                        num_rows=len(keys),
                        columns=[
                            t.Column(name=KEY, values=t.Values_Int64(keys), validity=None),
                            t.Column(
                                name=TS,
                                values=t.Values_Timestamp(times),
                                validity=time_validity,
                            ),
                        ],
                    ),
                )
            )
        return out
