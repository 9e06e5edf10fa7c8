//! The store's resource limiter: the memory cap, remembering the guest's peak memory
//! and whether a growth was refused.

use wasmtime::StoreLimits;

/// The store's limits, remembering the largest linear memory the guest grew to and
/// whether a growth was refused (so a trap is known to be the memory cap's).
pub(super) struct Limiter {
    pub(super) inner: StoreLimits,
    pub(super) memory_peak: usize,
    pub(super) refused: bool,
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        match self.inner.memory_growing(current, desired, maximum) {
            Ok(true) => {
                self.memory_peak = self.memory_peak.max(desired);
                Ok(true)
            }
            refused => {
                self.refused = true;
                refused
            }
        }
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.memory_grow_failed(error)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}
