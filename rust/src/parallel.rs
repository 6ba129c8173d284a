//! The one place that decides whether work runs on the calling thread or on a
//! thread pool, and on how many threads.
//!
//! Every call gets a thread pool of its own instead of rayon's global pool: a
//! global pool's threads do not survive `fork`, so a child process (a DataLoader
//! worker, `datasets.map(num_proc=...)`) that inherited it would wait on them
//! forever. A pool costs tens of microseconds to start, small next to most of the
//! work it runs; with one worker, per-item work starts none and runs on the
//! calling thread.

use rayon::prelude::*;

use crate::error::{Error, Result};

/// How many threads a call may use (`workers` of the Python API: 1 runs
/// serially, -1 uses every available core).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workers(usize);

impl Workers {
    /// One thread: the calling one.
    pub const ONE: Workers = Workers(1);

    /// `-1` means every available core, a positive value is the count itself.
    pub fn new(workers: i64) -> Result<Workers> {
        match workers {
            -1 => Ok(Workers(std::thread::available_parallelism().map_or(1, |n| n.get()))),
            w if w >= 1 => Ok(Workers(w as usize)),
            w => Err(Error::invalid("workers", format!("must be -1 (all cores) or a positive count, got {w}"))),
        }
    }

    pub fn count(self) -> usize {
        self.0
    }

    /// Runs `work`, whose rayon parallel iterators then use exactly these
    /// threads, on a pool of its own (also for one worker: a parallel iterator
    /// outside a pool would start rayon's global one).
    pub fn install<R: Send>(self, work: impl FnOnce() -> R + Send) -> Result<R> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(self.0)
            .build()
            .map_err(|e| Error::invalid("workers", format!("cannot start {} threads: {e}", self.0)))?;
        Ok(pool.install(work))
    }

    /// `work(state, item)` for every item, results in item order, with one
    /// `init()` state per thread: on the calling thread for one worker (no pool
    /// to start, which would cost more than a small batch), otherwise on a pool
    /// of its own.
    pub fn map_with<T: Send, S, R: Send>(
        self,
        items: Vec<T>,
        init: impl Fn() -> S + Send + Sync,
        work: impl Fn(&mut S, T) -> R + Send + Sync,
    ) -> Result<Vec<R>> {
        if self.0 == 1 {
            let mut state = init();
            return Ok(items.into_iter().map(|item| work(&mut state, item)).collect());
        }
        self.install(|| items.into_par_iter().map_init(init, work).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_counts() {
        assert_eq!(Workers::new(3).unwrap().count(), 3);
        assert!(Workers::new(-1).unwrap().count() >= 1);
        let err = Workers::new(0).unwrap_err();
        assert_eq!(err.to_string(), "workers: must be -1 (all cores) or a positive count, got 0");
    }

    #[test]
    fn serial_and_pooled_maps_agree() {
        let square = |calls: &mut usize, x: u64| {
            *calls += 1;
            x * x
        };
        let items: Vec<u64> = (0..100).collect();
        let serial = Workers::ONE.map_with(items.clone(), || 0usize, square).unwrap();
        assert_eq!(serial, Workers::new(3).unwrap().map_with(items, || 0usize, square).unwrap());
        assert_eq!(serial[7], 49);
    }
}
