//! Running work on a given number of threads.
//!
//! Every call gets a thread pool of its own instead of rayon's global pool: a
//! global pool's threads do not survive `fork`, so a child process (a DataLoader
//! worker, `datasets.map(num_proc=...)`) that inherited it would wait on them
//! forever. A pool costs tens of microseconds to start, small next to most of the
//! work it runs; `align_batch` with one worker starts none and runs on the
//! calling thread (`Aligner::align_batch_serial`).

use crate::error::{Error, Result};

/// Runs `work` (which may use rayon's parallel iterators) on exactly `workers`
/// threads.
pub fn run_with_workers<R: Send>(workers: usize, work: impl FnOnce() -> R + Send) -> Result<R> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(workers.max(1))
        .build()
        .map_err(|e| Error::invalid("workers", format!("cannot start {workers} threads: {e}")))?;
    Ok(pool.install(work))
}

/// Number of threads for a `workers` argument: `-1` means every available core,
/// a positive value is the count itself.
pub fn resolve_workers(workers: i64) -> Result<usize> {
    match workers {
        -1 => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
        w if w >= 1 => Ok(w as usize),
        w => Err(Error::invalid("workers", format!("must be -1 (all cores) or a positive count, got {w}"))),
    }
}
