//! How fast the SDK turns change rows into keys, natively (no Wasm): the same steps the
//! component runs for `every_upstream_key`, timed one by one, next to a hand-written
//! hash map that does the same deduplication. Run it with
//!
//!     cargo run --release --example derive_speed -p dlink-plugin-sdk [UPSTREAMS] [ROWS]
//!
//! (default 6 upstreams of 220,000 change rows). `dlink-bench` measures the same
//! derivation as a Wasm plugin; comparing the two separates the cost of the SDK from
//! the cost of the sandbox.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use dlink_plugin_sdk::{Batch, Changes, KeyColumn, Keys};

/// SplitMix64, as the host's workload generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// One upstream's change rows as the host sends them: a version-0 insert of every id,
/// then updates (two rows each) of a few, in record batches of 8,192 rows.
fn upstream_ipc(rows: usize, rng: &mut Rng) -> Vec<u8> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("_change_type", DataType::Utf8, false),
        Field::new("_commit_version", DataType::Int64, false),
        Field::new(
            "_commit_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    ]));
    let base = rows - rows / 20;
    let mut all: Vec<(i64, &str, i64)> = (0..base as i64).map(|id| (id, "insert", 0)).collect();
    while all.len() + 1 < rows {
        let id = (rng.next() % base as u64) as i64;
        let version = 1 + (rng.next() % 4) as i64;
        all.push((id, "update_preimage", version));
        all.push((id, "update_postimage", version));
    }
    let mut writer = StreamWriter::try_new(Vec::new(), &schema).expect("writer");
    for chunk in all.chunks(8192) {
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(chunk.iter().map(|r| Some(r.0)).collect::<Int64Array>()),
                Arc::new(chunk.iter().map(|r| Some(r.1)).collect::<StringArray>()),
                Arc::new(chunk.iter().map(|r| Some(r.2)).collect::<Int64Array>()),
                Arc::new(
                    chunk
                        .iter()
                        .map(|r| Some(1_700_000_000_000_000 + r.2 * 1_000_000))
                        .collect::<TimestampMicrosecondArray>()
                        .with_timezone("UTC"),
                ),
            ],
        )
        .expect("batch");
        writer.write(&batch).expect("write");
    }
    writer.into_inner().expect("finish")
}

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let upstreams: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(6);
    let rows: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(220_000);
    let mut rng = Rng(42);
    let names: Vec<String> = (0..upstreams).map(|i| format!("t{i:03}")).collect();
    let inputs: Vec<Vec<u8>> = (0..upstreams)
        .map(|_| upstream_ipc(rows, &mut rng))
        .collect();
    let key = || vec![KeyColumn::i64("id")];

    let mut best = [Duration::MAX; 5];
    let mut native = Duration::MAX;
    let mut pairs = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let changes = names
            .iter()
            .zip(&inputs)
            .map(|(n, b)| Changes::from_ipc_owned(n.clone(), 1, 4, b.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let batch = Batch::new("p", 1, changes);
        let decode = t.elapsed();

        let t = Instant::now();
        let mut keys = Keys::new(key(), names.clone())?;
        for changes in batch.upstreams() {
            let ids = changes.i64_column("id")?;
            for (row, id) in changes.rows().zip(ids) {
                keys.add_from(&row, id)?;
            }
        }
        let derive = t.elapsed();

        let t = Instant::now();
        let mut bulk = Keys::new(key(), names.clone())?;
        for changes in batch.upstreams() {
            bulk.add_column(changes, "id")?;
        }
        let each = t.elapsed();
        if bulk.len() != keys.len() {
            return Err("add_column and add_from disagree".into());
        }

        let t = Instant::now();
        pairs = keys.len();
        let out = keys.into_ipc()?;
        let encode = t.elapsed();
        for (slot, d) in
            best.iter_mut()
                .zip([decode, derive, encode, decode + derive + encode, each])
        {
            *slot = (*slot).min(d);
        }
        std::hint::black_box(out);

        // dlink-bench's native reference: (id, upstream) -> newest, in a foldhash map.
        let t = Instant::now();
        let mut index: HashMap<(i64, usize), usize, foldhash::fast::RandomState> =
            HashMap::default();
        let mut newest: Vec<Option<i64>> = Vec::new();
        for (u, c) in batch.upstreams().iter().enumerate() {
            let ids = c.i64_column("id")?;
            for (row, id) in c.rows().zip(ids) {
                let Some(id) = id else { continue };
                let slot = *index.entry((id, u)).or_insert_with(|| {
                    newest.push(None);
                    newest.len() - 1
                });
                newest[slot] = newest[slot].max(row.commit_timestamp());
            }
        }
        native = native.min(t.elapsed());
        std::hint::black_box(newest);
    }
    let total_rows = upstreams * rows;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("{upstreams} upstreams x {rows} change rows = {total_rows} rows, {pairs} (key, upstream) pairs; best of 5");
    println!("  decode (IPC + CDF columns)  {:8.1} ms", ms(best[0]));
    println!("  derive (Keys::add_from)     {:8.1} ms", ms(best[1]));
    println!("  encode (Keys::into_ipc)     {:8.1} ms", ms(best[2]));
    println!(
        "  SDK total                   {:8.1} ms  ({:.0} ns/row)",
        ms(best[3]),
        best[3].as_nanos() as f64 / total_rows as f64
    );
    println!("  derive (Keys::add_column)   {:8.1} ms", ms(best[4]));
    println!("  hand-written map (derive)   {:8.1} ms", ms(native));
    Ok(())
}
