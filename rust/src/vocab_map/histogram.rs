//! Symbol counts folded into a few bins: a lower bound of the edit distance
//! that costs a few vector instructions per pair.
//!
//! An edit changes at most one symbol count up and one down, so the edit
//! distance is at least the larger of the two one-sided count differences
//! (the symbols one string has in surplus, and those it lacks); that bound also
//! covers the length difference.

/// Number of bins: 32 one-byte counts fill one 256-bit vector.
pub const BINS: usize = 32;

/// Symbol counts per bin.
#[derive(Clone, Copy)]
#[repr(align(32))]
pub struct Histogram([u8; BINS]);

impl Histogram {
    /// A lower bound of the edit distance between the strings of the two
    /// histograms, whose lengths differ by `length_gap`.
    ///
    /// With `surplus` and `lack` the one-sided differences of the true counts,
    /// the bound is max(surplus, lack) = (surplus + lack + |surplus - lack|) / 2,
    /// where surplus - lack is the length difference and surplus + lack is at
    /// least the sum of absolute differences of the binned, saturated counts
    /// (merging and saturating counts never widens a difference).
    #[inline]
    pub fn lower_bound(&self, other: &Histogram, length_gap: u32) -> u32 {
        (sum_of_differences(&self.0, &other.0) + length_gap) / 2
    }
}

/// Sum of the absolute differences of the counts.
#[cfg(target_arch = "x86_64")]
#[inline]
fn sum_of_differences(a: &[u8; BINS], b: &[u8; BINS]) -> u32 {
    use std::arch::x86_64::{
        __m128i, _mm_add_epi64, _mm_cvtsi128_si32, _mm_load_si128, _mm_sad_epu8, _mm_unpackhi_epi64,
    };
    // The compiler does not find psadbw in the portable loop once it is
    // inlined into the scan, so it is spelled out. SAFETY: SSE2 is part of
    // x86_64, and every 16-byte read is aligned (`Histogram` is aligned to 32)
    // and inside the arrays.
    unsafe {
        let chunk = |x: &[u8; BINS], k: usize| _mm_load_si128(x.as_ptr().add(16 * k).cast::<__m128i>());
        let mut sums = _mm_sad_epu8(chunk(a, 0), chunk(b, 0));
        for k in 1..BINS / 16 {
            sums = _mm_add_epi64(sums, _mm_sad_epu8(chunk(a, k), chunk(b, k)));
        }
        (_mm_cvtsi128_si32(sums) + _mm_cvtsi128_si32(_mm_unpackhi_epi64(sums, sums))) as u32
    }
}

/// Sum of the absolute differences of the counts.
#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn sum_of_differences(a: &[u8; BINS], b: &[u8; BINS]) -> u32 {
    a.iter().zip(b).map(|(&x, &y)| u32::from(x.abs_diff(y))).sum()
}

/// The bin of every symbol, chosen so that the counts that matter stay apart.
pub struct Binning {
    bin_of: Vec<u8>,
}

impl Binning {
    /// Bins for symbols below `alphabet`, balanced by how often each symbol
    /// occurs in `strings`: the most frequent symbols get bins of their own, so
    /// that common letters are not merged (a merge hides a substitution between
    /// them); rare symbols share the remaining ones.
    pub fn new<'a>(alphabet: usize, strings: impl Iterator<Item = &'a [u32]>) -> Self {
        let mut frequency = vec![0u64; alphabet];
        for s in strings {
            for &symbol in s {
                frequency[symbol as usize] += 1;
            }
        }
        let mut by_frequency: Vec<usize> = (0..alphabet).collect();
        by_frequency.sort_unstable_by_key(|&symbol| std::cmp::Reverse(frequency[symbol]));
        let mut load = [0u64; BINS];
        let mut bin_of = vec![0u8; alphabet];
        for symbol in by_frequency {
            // Ties in load go to the lowest bin, which spreads zero-frequency symbols too.
            let bin = (0..BINS).min_by_key(|&b| load[b]).unwrap_or(0);
            load[bin] += frequency[symbol].max(1);
            bin_of[symbol] = bin as u8;
        }
        Binning { bin_of }
    }

    pub fn histogram(&self, symbols: &[u32]) -> Histogram {
        let mut counts = [0u8; BINS];
        for &symbol in symbols {
            let count = &mut counts[self.bin_of[symbol as usize] as usize];
            *count = count.saturating_add(1);
        }
        Histogram(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edit_distance::dp_distance;
    use proptest::prelude::*;

    #[test]
    fn frequent_symbols_get_bins_of_their_own() {
        let strings: Vec<Vec<u32>> = (0..40u32).map(|s| vec![s; 100 - s as usize]).collect();
        let binning = Binning::new(40, strings.iter().map(Vec::as_slice));
        let mut bins: Vec<u8> = binning.bin_of[..BINS].to_vec();
        bins.sort_unstable();
        bins.dedup();
        assert_eq!(bins.len(), BINS);
    }

    proptest! {
        #[test]
        fn bound_is_below_the_distance(a in proptest::collection::vec(0u32..80, 0..300),
                                       b in proptest::collection::vec(0u32..80, 0..300)) {
            let binning = Binning::new(80, [&a[..], &b[..]].into_iter());
            let gap = a.len().abs_diff(b.len()) as u32;
            let bound = binning.histogram(&a).lower_bound(&binning.histogram(&b), gap);
            prop_assert!(bound <= dp_distance(&a, &b));
            prop_assert!(bound >= gap);
        }
    }
}
