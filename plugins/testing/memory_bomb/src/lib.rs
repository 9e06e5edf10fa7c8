//! Hostile test plugin: `init` succeeds, `derive` allocates 4 MiB chunks (touching
//! every page) and keeps them until the linear memory cannot grow any more. The host's
//! memory cap (`[plugin.limits] memory_mb`, a store limiter that traps on a failed
//! grow) must stop it with a clear error rather than let it take the process's memory.

use dlink_plugin_sdk::{export_pipeline, Batch, Error, Keys, NoConfig, Pipeline, PipelineInfo};

struct MemoryBomb;

const CHUNK: usize = 4 << 20;

impl Pipeline for MemoryBomb {
    type Config = NoConfig;

    fn init(_config: NoConfig, _pipeline: &PipelineInfo) -> Result<Self, Error> {
        Ok(MemoryBomb)
    }

    fn derive(&mut self, _batch: &Batch, _keys: &mut Keys) -> Result<(), Error> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        // wasm32 addresses 4 GiB at most: 1024 chunks; reaching the end means the
        // host's cap did not stop the plugin.
        for _ in 0..1024 {
            let mut chunk = vec![0u8; CHUNK];
            for i in (0..CHUNK).step_by(4096) {
                chunk[i] = 1;
            }
            hoard.push(std::hint::black_box(chunk));
        }
        Err(format!(
            "memory_bomb: allocated {} MiB without hitting a memory cap",
            hoard.len() * (CHUNK >> 20)
        )
        .into())
    }
}

export_pipeline!(MemoryBomb);
