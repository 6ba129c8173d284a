//! The softmax terms of a text's top-k rows, computed in one vectorized pass.

use crate::remap::block_row;
use crate::remap::fast_math::{exp_nonpositive, ln_at_least_one};

/// Softmax terms of consecutive top-k rows: per slot e^(logit - row maximum)
/// (0 for an empty slot), per row the maximum and the sum of the terms.
#[derive(Default)]
pub struct ExpBlock {
    k: usize,
    exps: Vec<f32>,
    maxes: Vec<f32>,
    sums: Vec<f32>,
    /// Per row: the log-sum-exp of its listed logits.
    log_normalizers: Vec<f32>,
}

impl ExpBlock {
    /// Fills the block from `[rows, k]` candidate ids and logits.
    /// Rows not marked in `rows_used` get no terms (all 0).
    pub fn fill<C: Copy + Into<i64>>(&mut self, ids: &[C], logits: &[f32], k: usize, rows_used: &[bool]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            return unsafe { self.fill_avx2(ids, logits, k, rows_used) };
        }
        self.fill_portable(ids, logits, k, rows_used)
    }

    /// [`ExpBlock::fill`] compiled for AVX2: twice as many terms per
    /// instruction as the SSE2 every x86_64 has, with the same result (the
    /// operations are the same, only the vectors are wider).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn fill_avx2<C: Copy + Into<i64>>(&mut self, ids: &[C], logits: &[f32], k: usize, rows_used: &[bool]) {
        self.fill_portable(ids, logits, k, rows_used)
    }

    #[inline(always)]
    fn fill_portable<C: Copy + Into<i64>>(&mut self, ids: &[C], logits: &[f32], k: usize, rows_used: &[bool]) {
        self.k = k;
        // Rows of no candidates (k = 0) are rows all the same: without terms, of sum 0.
        let rows = ids.len().checked_div(k).map_or(rows_used.len(), |rows| rows.min(rows_used.len()));
        self.exps.clear();
        self.exps.resize(rows * k, f32::NEG_INFINITY);
        self.maxes.clear();
        self.maxes.resize(rows, f32::NEG_INFINITY);
        if rows == 0 || k == 0 {
            self.sums.clear();
            self.sums.resize(rows, 0.0);
            self.log_normalizers.clear();
            self.log_normalizers.resize(rows, f32::NEG_INFINITY);
            return;
        }
        // First the shifted logits (-inf for an empty slot, whatever its logit),
        // then one long loop of exponentials, which vectorizes. The shift is a
        // row's first listed logit, its largest in a sorted top-k list; a row
        // where a later one is larger is shifted again by its maximum.
        let valid = |c: C| c.into() >= 0;
        let rows_in = ids.chunks_exact(k).zip(logits.chunks_exact(k)).zip(rows_used);
        for ((shifted, top), ((row, row_logits), &used)) in self.exps.chunks_exact_mut(k).zip(&mut self.maxes).zip(rows_in) {
            if !used {
                continue;
            }
            let first = row.iter().zip(row_logits).find(|(&c, _)| valid(c)).map_or(f32::NEG_INFINITY, |(_, &l)| l);
            for ((x, &c), &logit) in shifted.iter_mut().zip(row).zip(row_logits) {
                *x = if valid(c) { logit - first } else { f32::NEG_INFINITY };
            }
            *top = first;
        }
        // One pass without early exit (it vectorizes) tells whether any row needs it.
        if self.exps.iter().fold(false, |above, &x| above | (x > 0.0)) {
            for (shifted, top) in self.exps.chunks_exact_mut(k).zip(&mut self.maxes) {
                let excess = shifted.iter().fold(0.0f32, |m, &x| if x > m { x } else { m });
                shifted.iter_mut().for_each(|x| *x -= excess);
                *top += excess;
            }
        }
        for x in &mut self.exps {
            *x = exp_nonpositive(*x);
        }
        // Plain loops rather than `extend`, so that they are compiled with the
        // caller's instruction set; the logarithms vectorize across rows.
        self.sums.resize(rows, 0.0);
        for (sum, row) in self.sums.iter_mut().zip(self.exps.chunks_exact(k)) {
            *sum = row_sum(row);
        }
        self.log_normalizers.resize(rows, 0.0);
        for (log_normalizer, (&max, &sum)) in self.log_normalizers.iter_mut().zip(self.maxes.iter().zip(&self.sums)) {
            *log_normalizer = max + ln_at_least_one(sum);
        }
    }

    /// Row `i`'s terms.
    pub fn row(&self, i: usize) -> &[f32] {
        block_row(&self.exps, self.k, i)
    }

    /// Row `i`'s probability mass whose terms sum to `kept`.
    pub fn kept_share(&self, i: usize, kept: f32) -> f32 {
        if kept > 0.0 {
            kept / self.sums[i]
        } else {
            0.0
        }
    }

    /// Log of row `i`'s softmax normalizer: the log-sum-exp of its listed logits.
    pub fn log_normalizer(&self, i: usize) -> f32 {
        self.log_normalizers[i]
    }
}

/// The sum of a row's terms, in four running sums rather than one chain of
/// dependent additions.
#[inline]
fn row_sum(row: &[f32]) -> f32 {
    let chunks = row.chunks_exact(4);
    let tail: f32 = chunks.remainder().iter().sum();
    let mut lanes = [0.0f32; 4];
    for chunk in chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane += x;
        }
    }
    (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]) + tail
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_and_portable_softmax_terms_agree_bit_for_bit() {
        // Unsorted rows, empty slots and unused rows, k not a multiple of the vector width.
        let (k, rows) = (7, 60);
        let ids: Vec<i64> = (0..rows * k).map(|slot| if slot % 11 == 3 { -1 } else { slot as i64 }).collect();
        let logits: Vec<f32> = (0..rows * k).map(|slot| ((slot * 7919) % 200) as f32 * 0.37 - 40.0).collect();
        let rows_used: Vec<bool> = (0..rows).map(|row| row % 5 != 0).collect();
        let (mut dispatched, mut portable) = (ExpBlock::default(), ExpBlock::default());
        dispatched.fill(&ids, &logits, k, &rows_used);
        portable.fill_portable(&ids, &logits, k, &rows_used);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for (a, b) in [
            (&dispatched.exps, &portable.exps),
            (&dispatched.sums, &portable.sums),
            (&dispatched.log_normalizers, &portable.log_normalizers),
        ] {
            assert_eq!(bits(a), bits(b));
        }
        assert!(dispatched.sums.iter().zip(&rows_used).all(|(&sum, &used)| (sum >= 1.0) == used));
    }
}
