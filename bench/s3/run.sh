#!/usr/bin/env bash
# `make bench-s3`: the four example pipelines over tables on a loopback S3 server
# (moto, from the venv `make peer-venv` makes) against the same on local disk, with the
# object-store requests each run makes (counted from the server's access log).
#
#   bench/s3/run.sh DLINK_RT_BINARY MOTO_SERVER [ROWS]
#
# The tables are written by `dlink-bench --examples`: the dlink-bench binary next to
# DLINK_RT_BINARY (cargo builds both into one target folder: `make release`), or
# $DLINK_BENCH. Everything else runs DLINK_RT_BINARY.
#
# Prints: local and S3 catch-up times and their ratio; requests of the catch-up, of a
# run with nothing to do, and per batch of a one-version-per-batch catch-up of
# sp_affiliation (showing whether a batch's requests grow with the table's history).
set -euo pipefail
bin=$1; moto=$2; rows=${3:-100000}
bench=${DLINK_BENCH:-$(dirname "$bin")/dlink-bench}
[ -x "$bench" ] || { echo "bench-s3: no dlink-bench at $bench (make release builds it, or set DLINK_BENCH)" >&2; exit 2; }
python="$(dirname "$moto")/python"
work=$(mktemp -d /tmp/dlink-bench-s3.XXXXXX)
trap 'kill $moto_pid 2>/dev/null || true; rm -rf "$work"' EXIT
port=$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$moto" -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
moto_pid=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port" && break; sleep 0.1; done
curl -s -X PUT "http://127.0.0.1:$port/lake" -o /dev/null
now() { date +%s.%N; }
requests() { grep -cE '"(GET|PUT|HEAD|POST|DELETE) ' "$work/moto.log" || true; }

echo "bench-s3: writing the example tables at $rows rows (dlink-bench --examples --keep)" >&2
"$bench" --examples --rows "$rows" --keep --dir "$work/local" >/dev/null 2>&1
rm -rf "$work/local/links"

echo "bench-s3: uploading them" >&2
"$python" - "$port" "$work/local/tables" <<'PY'
import os, sys, boto3
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}", aws_access_key_id="bench",
                  aws_secret_access_key="bench", region_name="us-east-1")
root = sys.argv[2]
for d, _, files in os.walk(root):
    for f in files:
        p = os.path.join(d, f)
        s3.upload_file(p, "lake", "tables/" + os.path.relpath(p, root))
PY

mkdir -p "$work/s3"
{
  printf '[storage]\naws_endpoint_url = "http://127.0.0.1:%s"\naws_region = "us-east-1"\n' "$port"
  printf 'aws_allow_http = "true"\naws_access_key_id = "bench"\naws_secret_access_key = "bench"\n\n'
  for t in "$work"/local/tables/*; do
    n=$(basename "$t"); printf '[upstreams.%s]\nuri = "s3://lake/tables/%s"\n\n' "$n" "$n"
  done
} >"$work/s3/upstreams.toml"
for f in "$work"/local/*.toml; do
  n=$(basename "$f" .toml); [ "$n" = upstreams ] && continue
  sed "s#^uri = \"links/#uri = \"s3://lake/links/#" "$f" >"$work/s3/$n.toml"
done

t0=$(now); "$bin" run "$work/local" >/dev/null; t1=$(now)
local_s=$(echo "$t1 - $t0" | bc)
r0=$(requests); t0=$(now); "$bin" run "$work/s3" >/dev/null; t1=$(now); r1=$(requests)
s3_s=$(echo "$t1 - $t0" | bc)
"$bin" run "$work/s3" >/dev/null; r2=$(requests)

# One version per batch: the requests of each batch as the history grows.
sed -e 's#links/sp_affiliation#links/sp_steps#' -e 's/^name = .*/name = "sp_steps"/' \
  "$work/s3/sp_affiliation.toml" | sed '/^upstreams/a batch_size = 1' >"$work/s3/steps.toml"
per_batch=()
for _ in $(seq 25); do
  a=$(requests); "$bin" run "$work/s3/steps.toml" --max-batches 1 >/dev/null; b=$(requests)
  per_batch+=($((b - a)))
done

printf 'bench-s3 (%s rows, 4 pipelines in one process, 6 tables, 25 versions each)\n' "$rows"
printf '  catch-up on local disk  %.3f s\n' "$local_s"
printf '  catch-up over S3        %.3f s  (%.2fx local), %d requests\n' "$s3_s" "$(echo "$s3_s / $local_s" | bc -l)" $((r1 - r0))
printf '  a run with nothing new  %d requests\n' $((r2 - r1))
printf '  sp_affiliation, one version per batch (a process per batch), requests per batch:\n   '
printf ' %s' "${per_batch[@]}"; echo
