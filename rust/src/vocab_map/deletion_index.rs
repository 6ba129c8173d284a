//! Every target string within edit distance 2 of a query, without a scan.
//!
//! If two strings are at most two edits apart, deleting at most two symbols from
//! each makes them equal: a substitution is a deletion on both sides, an
//! insertion a deletion on the other side. The index holds a hash of every
//! target variant with zero, one or two symbols deleted; a query looks up its
//! own variants. A hit shares a variant, so it may still be up to four edits
//! away (or a hash collision): the caller verifies every candidate. Each hash
//! carries the number of deletions in its two low bits, so that a search for
//! distance 1 can stick to variants with at most one deletion on each side.

use rayon::prelude::*;

/// Hashes of deletion variants, grouped by their top bits (a counting sort, so
/// building costs no comparison sort even for millions of variants).
pub struct DeletionIndex {
    /// Start of each group in `entries`; group `g` holds the hashes whose top
    /// bits are `g`.
    starts: Vec<u32>,
    /// (low 32 bits of the hash, target id); the top bits are the group, the
    /// two lowest the number of deletions.
    entries: Vec<(u32, u32)>,
    shift: u32,
}

impl DeletionIndex {
    /// Indexes `strings`, given as (id, symbols). Runs on the current rayon pool.
    pub fn new(strings: &[(u32, &[u32])]) -> Self {
        let variants: Vec<(u64, u32)> = strings
            .par_iter()
            .map_init(VariantHasher::default, |hasher, &(id, s)| {
                hasher.variants(s).iter().map(|&h| (h, id)).collect::<Vec<_>>()
            })
            .flatten_iter()
            .collect();
        // About four entries per group: a lookup reads one cache line of
        // entries, and the group starts stay a quarter of the entries' size.
        let bits = usize::BITS - (variants.len() / 4).max(1).leading_zeros();
        let shift = u64::BITS - bits;
        let groups = 1usize << bits;
        let mut starts = vec![0u32; groups + 1];
        for &(h, _) in &variants {
            starts[(h >> shift) as usize] += 1;
        }
        // Running sums make starts[g] the end of group g; filling each group
        // from its end then leaves starts[g] at its start.
        let mut total = 0;
        for start in &mut starts {
            total += *start;
            *start = total;
        }
        let mut entries = vec![(0u32, 0u32); variants.len()];
        for &(h, id) in &variants {
            let start = &mut starts[(h >> shift) as usize];
            *start -= 1;
            entries[*start as usize] = (h as u32, id);
        }
        DeletionIndex { starts, entries, shift }
    }

    /// Calls `visit` with the id of every indexed string that shares a variant
    /// with at most `max_deletions` deletions with the query whose `variants`
    /// are given (an id may come more than once). Up to two deletions find every
    /// string within distance 2, up to one every string within distance 1.
    pub fn for_each_candidate(&self, variants: &[u64], max_deletions: u32, mut visit: impl FnMut(u32)) {
        for &h in variants.iter().filter(|&&h| deletions(h as u32) <= max_deletions) {
            let group = (h >> self.shift) as usize;
            let entries = &self.entries[self.starts[group] as usize..self.starts[group + 1] as usize];
            for &(low, id) in entries {
                if low >> 2 == (h as u32) >> 2 && deletions(low) <= max_deletions {
                    visit(id);
                }
            }
        }
    }
}

#[inline]
fn deletions(tagged: u32) -> u32 {
    tagged & 3
}

/// Scratch space for the hashes of one string's deletion variants.
///
/// A polynomial hash over prefixes gives the hash of every variant in constant
/// time (the parts before, between and after the deleted symbols are joined by
/// multiplying with powers of the base), so a string of n symbols costs O(n^2),
/// not O(n^3).
#[derive(Default)]
pub struct VariantHasher {
    prefixes: Vec<u64>,
    powers: Vec<u64>,
    out: Vec<u64>,
}

const BASE: u64 = 0x0000_0100_0000_01B3;

impl VariantHasher {
    /// Hashes of `symbols` with zero, one and two symbols deleted, each distinct
    /// variant once (in hash order).
    pub fn variants(&mut self, symbols: &[u32]) -> &[u64] {
        let n = symbols.len();
        self.prefixes.clear();
        self.prefixes.push(0);
        for &s in symbols {
            // Symbols are spread over 64 bits so that small ids do not interact.
            let spread = (u64::from(s) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            self.prefixes.push(self.prefixes.last().unwrap().wrapping_mul(BASE).wrapping_add(spread));
        }
        while self.powers.len() <= n {
            self.powers.push(self.powers.last().map_or(1, |p| p.wrapping_mul(BASE)));
        }
        let (p, pow) = (&self.prefixes, &self.powers);
        // Hash of symbols[a..b].
        let part = |a: usize, b: usize| p[b].wrapping_sub(p[a].wrapping_mul(pow[b - a]));
        let join = |left: u64, right: u64, right_len: usize| left.wrapping_mul(pow[right_len]).wrapping_add(right);
        self.out.clear();
        self.out.push(finish(p[n], n, 0));
        for (i, &before_i) in p[..n].iter().enumerate() {
            let without_i = join(before_i, part(i + 1, n), n - i - 1);
            self.out.push(finish(without_i, n - 1, 1));
            for j in i + 1..n {
                let before_j = join(before_i, part(i + 1, j), j - i - 1);
                self.out.push(finish(join(before_j, part(j + 1, n), n - j - 1), n - 2, 2));
            }
        }
        // Runs of equal symbols give the same variant several times.
        self.out.sort_unstable();
        self.out.dedup();
        &self.out
    }
}

/// The hash of a variant of `len` symbols from its polynomial hash `h`, tagged
/// with its number of deletions.
#[inline]
fn finish(h: u64, len: usize, deletions: u64) -> u64 {
    mix(h ^ (len as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93)) & !3 | deletions
}

/// A bijective finaliser (murmur3's), so that the top bits that pick a group
/// depend on every symbol.
#[inline]
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^= h >> 33;
    h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every variant spelled out, each hashed as a whole string.
    fn spelled_out(s: &[u32]) -> Vec<u64> {
        let n = s.len();
        let mut strings = vec![s.to_vec()];
        for i in 0..n {
            strings.push([&s[..i], &s[i + 1..]].concat());
            for j in i + 1..n {
                strings.push([&s[..i], &s[i + 1..j], &s[j + 1..]].concat());
            }
        }
        let mut hasher = VariantHasher::default();
        let mut out: Vec<u64> = strings.iter().map(|v| whole(&mut hasher, v) & !3 | (n - v.len()) as u64).collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The hash of `s` itself: the only variant of its own length, which
    /// `variants` computes first.
    fn whole(hasher: &mut VariantHasher, s: &[u32]) -> u64 {
        hasher.variants(s);
        let n = s.len();
        finish(hasher.prefixes[n], n, 0)
    }

    #[test]
    fn finds_strings_two_edits_away() {
        let targets: Vec<Vec<u32>> = vec![vec![1, 2, 3, 4], vec![5, 6], vec![1, 3], vec![9, 9, 9, 9, 9]];
        let strings: Vec<(u32, &[u32])> = targets.iter().enumerate().map(|(k, t)| (k as u32, &t[..])).collect();
        let index = DeletionIndex::new(&strings);
        let mut hasher = VariantHasher::default();
        let mut found = |query: &[u32], max_deletions| {
            let mut found = Vec::new();
            index.for_each_candidate(hasher.variants(query), max_deletions, |id| found.push(id));
            found.sort_unstable();
            found.dedup();
            found
        };
        // Two substitutions away from [1, 2, 3, 4]; two insertions away from [1, 3].
        assert_eq!(found(&[1, 7, 3, 8], 2), vec![0, 2]);
        assert_eq!(found(&[1, 7, 3, 8], 1), Vec::<u32>::new());
        // One substitution away from [1, 2, 3, 4], one insertion away from [1, 3].
        assert_eq!(found(&[1, 2, 3], 1), vec![0, 2]);
    }

    proptest! {
        #[test]
        fn variant_hashes_are_those_of_the_spelled_out_variants(s in proptest::collection::vec(0u32..4, 0..12)) {
            let mut hasher = VariantHasher::default();
            prop_assert_eq!(hasher.variants(&s).to_vec(), spelled_out(&s));
        }
    }
}
