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
    /// (merging and saturating counts never widens a difference). That sum is
    /// one `psadbw` per 16 bins.
    #[inline]
    pub fn lower_bound(&self, other: &Histogram, length_gap: u32) -> u32 {
        let differences: u32 = self.0.iter().zip(&other.0).map(|(&a, &b)| u32::from(a.abs_diff(b))).sum();
        (differences + length_gap) / 2
    }
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
