//! The `mem:limit` of a run: a wasmtime resource limiter over linear
//! memories and tables.

use wasmtime::ResourceLimiter;

/// Host bytes counted per table element (a funcref is one pointer; the
/// pooling allocator and on-demand tables both store one word each).
pub(crate) const TABLE_ELEMENT_BYTES: u64 = 8;

/// Caps the total of all linear memories at `limit` bytes and each table at
/// `limit / 8` elements (or fewer: a pool slot's table size), and
/// remembers whether it ever refused.
#[derive(Debug)]
pub(crate) struct MemLimiter {
    limit: u64,
    max_table_elements: u64,
    /// Sum of the current sizes of this store's linear memories.
    current: u64,
    /// Highest `current` seen.
    pub peak: u64,
    /// Set when a growth (or an initial size) was refused.
    pub refused: Option<String>,
}

impl MemLimiter {
    /// Bytes of linear memory the store holds now.
    pub fn current(&self) -> u64 {
        self.current
    }

    /// `pool_table_elements`: the table size of a pool slot, when the run's
    /// engine pools instances (a larger table cannot be had anyway).
    pub fn new(limit: u64, pool_table_elements: Option<u64>) -> Self {
        let by_memory = limit / TABLE_ELEMENT_BYTES;
        MemLimiter {
            limit,
            max_table_elements: pool_table_elements.map_or(by_memory, |p| p.min(by_memory)),
            current: 0,
            peak: 0,
            refused: None,
        }
    }
}

impl ResourceLimiter for MemLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grow = (desired as u64).saturating_sub(current as u64);
        let total = self.current.saturating_add(grow);
        if total > self.limit {
            self.refused.get_or_insert_with(|| {
                format!(
                    "linear memory growth to {desired} bytes refused: {total} bytes in all would exceed the limit of {} bytes",
                    self.limit
                )
            });
            return Ok(false);
        }
        if maximum.is_some_and(|m| desired > m) {
            // wasmtime refuses this itself; do not count it.
            return Ok(true);
        }
        self.current = total;
        self.peak = self.peak.max(total);
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let max_elements = self.max_table_elements;
        if desired as u64 > max_elements {
            self.refused.get_or_insert_with(|| {
                format!(
                    "table growth to {desired} elements refused: at most {max_elements} under a memory limit of {} bytes",
                    self.limit
                )
            });
            return Ok(false);
        }
        Ok(true)
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        Ok(())
    }

    fn instances(&self) -> usize {
        // A preview-1 command is one instance.
        4
    }

    fn tables(&self) -> usize {
        16
    }

    fn memories(&self) -> usize {
        4
    }
}
