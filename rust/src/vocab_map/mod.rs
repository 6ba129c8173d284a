//! Step 1 of FuseLLM: map every source token to the target token at minimum edit
//! distance (MinED), ties to the lowest target id.
//!
//! The result is exactly the brute-force one, but most of the |V_s| x |V_t| pairs
//! are never compared. A query that is a target string is looked up; one within
//! two edits of a target finds it through an index of deletion variants
//! (`deletion_index`). Only the rest, known to be at least three edits from every
//! target, scan targets: bucketed by length and visited in order of length
//! difference, a pair is skipped when a lower bound from symbol counts
//! (`histogram`) already exceeds the best distance found, and the remaining
//! pairs run the bit-parallel kernel with an early exit at the current best.

mod deletion_index;
mod histogram;

use std::collections::HashMap;

use rayon::prelude::*;

use crate::edit_distance::{dp_distance, PatternTable};
use crate::vocab_map::deletion_index::{DeletionIndex, VariantHasher};
use crate::vocab_map::histogram::{Binning, Histogram};
use crate::error::{Error, Result};
use crate::text::symbols::{Alphabet, SymbolTable};
use crate::text::token_bytes::NormalizedVocab;

/// MinED image of every source token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VocabMap {
    /// Target id of each source id's image.
    pub target_ids: Vec<i32>,
    /// Edit distance to that image; 0 where the marker-swapped source string is a
    /// target token.
    pub distances: Vec<i32>,
}

impl VocabMap {
    /// Checks that a map built elsewhere fits vocabularies of these sizes.
    pub fn check_sizes(&self, source_size: usize, target_size: usize) -> Result<()> {
        let err = |msg: String| Err(Error::CorruptVocabMap(msg));
        if self.target_ids.len() != source_size || self.distances.len() != source_size {
            return err(format!(
                "vocab_map: it covers {} source tokens but the source vocabulary has {source_size}",
                self.target_ids.len()
            ));
        }
        if let Some(k) = self.target_ids.iter().position(|&t| t < 0 || t as usize >= target_size) {
            return err(format!(
                "vocab_map: source id {k} maps to {} outside the target vocabulary (size {target_size})",
                self.target_ids[k]
            ));
        }
        if let Some(k) = self.distances.iter().position(|&d| d < 0) {
            return err(format!("vocab_map: source id {k} has a negative distance"));
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
struct Best {
    distance: u32,
    id: u32,
}

impl Best {
    /// Nothing found yet.
    const NONE: Best = Best { distance: u32::MAX, id: u32::MAX };

    #[inline]
    fn beaten_by(&self, distance: u32, id: u32) -> bool {
        distance < self.distance || (distance == self.distance && id < self.id)
    }

    /// The largest distance at which `id` would beat this (`distance` is never
    /// 0 here: exact matches are looked up before any search).
    #[inline]
    fn limit_for(&self, id: u32) -> u32 {
        if id < self.id {
            self.distance
        } else {
            self.distance - 1
        }
    }
}

/// The string being mapped, with what the search needs.
struct Query<'a> {
    symbols: &'a [u32],
    histogram: Histogram,
    /// The bit-parallel pattern of `symbols`, when they fit in 64.
    table: Option<&'a PatternTable>,
}

impl Query<'_> {
    /// The distance to `target` if at most `limit`.
    #[inline]
    fn distance_within(&self, target: &[u32], limit: u32) -> Option<u32> {
        match self.table {
            Some(table) => table.bounded_distance(target, limit),
            None => Some(dp_distance(self.symbols, target)).filter(|&d| d <= limit),
        }
    }
}

/// Target strings of one length, in increasing id order.
#[derive(Default)]
struct LengthBucket {
    ids: Vec<u32>,
    histograms: Vec<Histogram>,
    /// The strings one after another, so that a scan reads memory in order.
    symbols: Vec<u32>,
}

/// The candidate targets (each distinct string once, at its lowest id), indexed
/// for the two stages of the search.
struct TargetIndex<'a> {
    symbols: &'a SymbolTable,
    /// Stage 1: every candidate within distance 2.
    deletions: DeletionIndex,
    /// Stage 2: a scan by length difference.
    buckets: Vec<LengthBucket>,
    binning: Binning,
}

impl TargetIndex<'_> {
    /// The nearest target if within distance 2 of `query` (which is no target
    /// string).
    fn nearest_within_two(&self, query: &Query<'_>, hasher: &mut VariantHasher) -> Option<Best> {
        let variants = hasher.variants(query.symbols);
        // Every string within `max_distance` shares a variant with at most that
        // many deletions.
        let nearest = |max_distance: u32| {
            // Anything within `max_distance` beats this.
            let mut best = Best { distance: max_distance + 1, id: 0 };
            self.deletions.for_each_candidate(variants, max_distance, |id| {
                let limit = best.limit_for(id);
                if limit >= 1 {
                    if let Some(d) = query.distance_within(self.symbols.get(id as usize), limit) {
                        best = Best { distance: d, id };
                    }
                }
            });
            (best.distance <= max_distance).then_some(best)
        };
        nearest(1).or_else(|| nearest(2))
    }

    /// The nearest target to `query`, which is at least `floor` from every
    /// target: buckets in order of length difference, each in id order.
    fn nearest(&self, query: &Query<'_>, floor: u32) -> Best {
        let len = query.symbols.len();
        let mut best = Best::NONE;
        for gap in 0..=len.max(self.buckets.len()) {
            let bound = (gap as u32).max(floor);
            if bound > best.distance {
                break;
            }
            let shorter = len.checked_sub(gap).filter(|_| gap > 0);
            for bucket_len in [Some(len + gap), shorter].into_iter().flatten() {
                if let Some(bucket) = self.buckets.get(bucket_len) {
                    self.scan(bucket, gap as u32, bound, query, &mut best);
                }
            }
        }
        best
    }

    /// Improves `best` from one bucket whose strings are all `gap` symbols
    /// longer or shorter than the query and at least `bound` from it.
    fn scan(&self, bucket: &LengthBucket, gap: u32, bound: u32, query: &Query<'_>, best: &mut Best) {
        let len = bucket.symbols.len() / bucket.ids.len().max(1);
        for (k, (&id, histogram)) in bucket.ids.iter().zip(&bucket.histograms).enumerate() {
            if bound >= best.distance && id > best.id {
                break; // every later id is larger and no closer
            }
            if !best.beaten_by(query.histogram.lower_bound(histogram, gap).max(bound), id) {
                continue;
            }
            if let Some(d) = query.distance_within(&bucket.symbols[k * len..(k + 1) * len], best.limit_for(id)) {
                *best = Best { distance: d, id };
            }
        }
    }
}

/// Builds the MinED map. Runs on the current rayon pool.
///
/// `source_marker` in every source string is replaced by `target_marker` before
/// comparison; markers stay in the strings otherwise (the published behaviour).
pub fn build_vocab_map<S: AsRef<str> + Sync>(
    source: &[S],
    target: &[S],
    source_marker: &str,
    target_marker: &str,
) -> Result<VocabMap> {
    if target.is_empty() {
        return Err(Error::invalid("target_tokens", "the target vocabulary is empty"));
    }
    let swapped: Vec<String> = source.iter().map(|s| s.as_ref().replace(source_marker, target_marker)).collect();
    let mut alphabet = Alphabet::default();
    let target_symbols = SymbolTable::encode(target.iter().map(AsRef::as_ref), &mut alphabet);
    let source_symbols = SymbolTable::encode(&swapped, &mut alphabet);
    let every_target: Vec<u32> = (0..target.len() as u32).collect();
    let (target_ids, distances) =
        nearest_images(&source_symbols, &target_symbols, alphabet.len(), &every_target).into_iter().unzip();
    Ok(VocabMap { target_ids, distances })
}

/// The MinED map over the exact bytes of the tokens (`normalize="bytes"`).
///
/// Ordinary source tokens map among ordinary target tokens by edit distance over
/// bytes (a byte-fallback token with an ordinary twin is left out, so `a` maps
/// onto `a` rather than `<0x61>`). A special source token maps to its counterpart in `special_pairs`
/// (by role: BOS to BOS, ...) at distance 0; one without a counterpart maps by
/// edit distance over its literal string among the special target tokens, so
/// special and ordinary tokens never map onto each other while the other side
/// has tokens of the same kind.
pub fn build_byte_vocab_map(
    source: &NormalizedVocab,
    target: &NormalizedVocab,
    source_tokens: &[String],
    target_tokens: &[String],
    special_pairs: &[(u32, u32)],
) -> Result<VocabMap> {
    if target.is_empty() {
        return Err(Error::invalid("target_tokens", "the target vocabulary is empty"));
    }
    let ids_where = |vocab: &NormalizedVocab, special: bool| -> Vec<u32> {
        (0..vocab.len() as u32).filter(|&id| vocab.is_special(id as usize) == special).collect()
    };
    let images = (0..target.len() as u32).filter(|&id| target.is_image(id as usize)).collect();
    let or_all = |ids: Vec<u32>| if ids.is_empty() { (0..target.len() as u32).collect() } else { ids };
    let mut target_ids = vec![0i32; source.len()];
    let mut distances = vec![0i32; source.len()];
    let mut place = |ids: &[u32], images: Vec<(i32, i32)>| {
        for (&id, (t, d)) in ids.iter().zip(images) {
            (target_ids[id as usize], distances[id as usize]) = (t, d);
        }
    };

    let ordinary = ids_where(source, false);
    let source_bytes = SymbolTable::from_sequences(ordinary.iter().map(|&id| source.get(id as usize).iter().map(|&b| u32::from(b))));
    let target_bytes = SymbolTable::from_sequences((0..target.len()).map(|id| target.get(id).iter().map(|&b| u32::from(b))));
    place(&ordinary, nearest_images(&source_bytes, &target_bytes, 256, &or_all(images)));

    let paired: std::collections::HashMap<u32, u32> = special_pairs.iter().copied().collect();
    let unpaired: Vec<u32> = ids_where(source, true).into_iter().filter(|id| !paired.contains_key(id)).collect();
    if !unpaired.is_empty() {
        let mut alphabet = Alphabet::default();
        let target_strings = SymbolTable::encode(target_tokens, &mut alphabet);
        let source_strings = SymbolTable::encode(unpaired.iter().map(|&id| &source_tokens[id as usize]), &mut alphabet);
        let candidates = or_all(ids_where(target, true));
        place(&unpaired, nearest_images(&source_strings, &target_strings, alphabet.len(), &candidates));
    }
    for (&s, &t) in &paired {
        place(&[s], vec![(t as i32, 0)]);
    }
    Ok(VocabMap { target_ids, distances })
}

/// For every sequence of `source`, the nearest sequence of `target` among the
/// ids in `candidates` (ascending, non-empty), ties to the lowest id: `(id,
/// distance)`. Symbols are below `alphabet`.
fn nearest_images(source: &SymbolTable, target: &SymbolTable, alphabet: usize, candidates: &[u32]) -> Vec<(i32, i32)> {
    let mut first_target: HashMap<&[u32], u32> = HashMap::with_capacity(candidates.len());
    let distinct: Vec<u32> =
        candidates.iter().copied().filter(|&id| *first_target.entry(target.get(id as usize)).or_insert(id) == id).collect();
    // A repeated string never beats its first occurrence.
    let strings = || distinct.iter().map(|&id| (id, target.get(id as usize)));
    let binning = Binning::new(alphabet, strings().map(|(_, s)| s));
    let mut buckets: Vec<LengthBucket> = Vec::new();
    for (id, symbols) in strings() {
        if buckets.len() <= symbols.len() {
            buckets.resize_with(symbols.len() + 1, LengthBucket::default);
        }
        let bucket = &mut buckets[symbols.len()];
        bucket.ids.push(id);
        bucket.histograms.push(binning.histogram(symbols));
        bucket.symbols.extend_from_slice(symbols);
    }
    let deletions = DeletionIndex::new(&strings().collect::<Vec<_>>());
    let index = TargetIndex { symbols: target, deletions, buckets, binning };

    (0..source.len())
        .into_par_iter()
        .map_init(
            || (PatternTable::new(alphabet), VariantHasher::default()),
            |(table, hasher), k| {
                let symbols = source.get(k);
                if let Some(&id) = first_target.get(symbols) {
                    return (id as i32, 0);
                }
                let fits = table.set(symbols);
                let query = Query { symbols, histogram: index.binning.histogram(symbols), table: fits.then_some(&*table) };
                let best = index.nearest_within_two(&query, hasher).unwrap_or_else(|| index.nearest(&query, 3));
                (best.id as i32, best.distance as i32)
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edit_distance::edit_distance;
    use proptest::prelude::*;

    fn brute_force(source: &[String], target: &[String], sm: &str, tm: &str) -> VocabMap {
        let mut ids = Vec::new();
        let mut dists = Vec::new();
        for s in source {
            let s = s.replace(sm, tm);
            let (mut best_id, mut best_d) = (0usize, u32::MAX);
            for (id, t) in target.iter().enumerate() {
                let d = edit_distance(&s, t);
                if d < best_d {
                    best_d = d;
                    best_id = id;
                }
            }
            ids.push(best_id as i32);
            dists.push(best_d as i32);
        }
        VocabMap { target_ids: ids, distances: dists }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn marker_swap_exact_match_and_ties() {
        let target = strings(&["▁the", "▁cat", "at", "ab", "▁the"]);
        let source = strings(&["Ġthe", "Ġcats", "aa", "x"]);
        let map = build_vocab_map(&source, &target, "Ġ", "▁").unwrap();
        assert_eq!(map.target_ids, vec![0, 1, 2, 2]);
        assert_eq!(map.distances, vec![0, 1, 1, 2]);
    }

    #[test]
    fn empty_target_is_an_error() {
        let err = build_vocab_map(&strings(&["a"]), &strings(&[]), "Ġ", "▁").unwrap_err();
        assert!(err.to_string().starts_with("target_tokens:"));
    }

    #[test]
    fn long_tokens_use_the_fallback() {
        let long = "Ġ".to_string() + &"=".repeat(80);
        let target = strings(&["▁", "=", &"=".repeat(70)]);
        let map = build_vocab_map(&[long], &target, "Ġ", "▁").unwrap();
        assert_eq!((map.target_ids[0], map.distances[0]), (2, 11));
    }

    #[test]
    fn byte_map_equates_spellings_and_pairs_specials_by_role() {
        use crate::text::family::Family;
        let source = strings(&["ĠcafÃ©", "Ċ", "<s>", "Ġx", "<|im_end|>"]);
        let target = strings(&["<s>", "<0x0A>", "▁café", "\n", "▁y", "</s>"]);
        let source_bytes = NormalizedVocab::new(&source, Family::ByteLevel, &[2, 4], "s").unwrap();
        let target_bytes = NormalizedVocab::new(&target, Family::SentencePiece, &[0, 5], "t").unwrap();
        let map = build_byte_vocab_map(&source_bytes, &target_bytes, &source, &target, &[(2, 0)]).unwrap();
        // `\n` is the ordinary twin of `<0x0A>`; `<|im_end|>` has no role pair and
        // maps among the special target tokens only (`<s>` and `</s>` tie at 8).
        assert_eq!(map.target_ids, vec![2, 3, 0, 4, 0]);
        assert_eq!(&map.distances[..4], &[0, 0, 0, 1]);
    }

    /// Brute-force byte MinED: byte-level source strings, SentencePiece targets.
    fn byte_brute_force(source: &[String], target: &[String]) -> VocabMap {
        use crate::text::family::Family;
        use crate::text::token_bytes::append_token_bytes;
        let symbols = |token: &str, family| {
            let mut bytes = Vec::new();
            append_token_bytes(token, family, &mut bytes);
            bytes.into_iter().map(u32::from).collect::<Vec<u32>>()
        };
        let (mut ids, mut dists) = (Vec::new(), Vec::new());
        for s in source {
            let s = symbols(s, Family::ByteLevel);
            let (mut best_id, mut best_d) = (0, u32::MAX);
            for (id, t) in target.iter().enumerate() {
                let t = symbols(t, Family::SentencePiece);
                let d = dp_distance(&s, &t);
                if d < best_d {
                    (best_id, best_d) = (id, d);
                }
            }
            ids.push(best_id as i32);
            dists.push(best_d as i32);
        }
        VocabMap { target_ids: ids, distances: dists }
    }

    proptest! {
        #[test]
        fn byte_map_equals_brute_force(source in proptest::collection::vec("[abĠé]{0,6}", 1..30),
                                       target in proptest::collection::vec("[ab▁éc]{0,6}", 1..30)) {
            use crate::text::family::Family;
            let source_bytes = NormalizedVocab::new(&source, Family::ByteLevel, &[], "s").unwrap();
            let target_bytes = NormalizedVocab::new(&target, Family::SentencePiece, &[], "t").unwrap();
            let fast = build_byte_vocab_map(&source_bytes, &target_bytes, &source, &target, &[]).unwrap();
            prop_assert_eq!(fast, byte_brute_force(&source, &target));
        }

        #[test]
        fn equals_brute_force(source in proptest::collection::vec("[abĠ▁é]{0,6}", 1..30),
                              target in proptest::collection::vec("[ab▁éc]{0,6}", 1..30)) {
            let fast = build_vocab_map(&source, &target, "Ġ", "▁").unwrap();
            prop_assert_eq!(fast, brute_force(&source, &target, "Ġ", "▁"));
        }

        /// Three letters and many repeated lengths: distances 2 and 3 with ties
        /// between several targets are common.
        #[test]
        fn equals_brute_force_with_ties(source in proptest::collection::vec("[abc]{0,9}", 1..40),
                                        target in proptest::collection::vec("[abc]{0,8}", 1..60)) {
            let fast = build_vocab_map(&source, &target, "Ġ", "▁").unwrap();
            prop_assert_eq!(fast, brute_force(&source, &target, "Ġ", "▁"));
        }

        /// Queries far from every target (the scan), and tokens longer than the
        /// 64 symbols of the bit-parallel kernel on both sides.
        #[test]
        fn equals_brute_force_far_and_long(source in proptest::collection::vec("[a-e]{5,14}|[ab]{60,72}", 1..20),
                                           target in proptest::collection::vec("[a-e]{0,6}|[ab]{58,70}", 1..40)) {
            let fast = build_vocab_map(&source, &target, "Ġ", "▁").unwrap();
            prop_assert_eq!(fast, brute_force(&source, &target, "Ġ", "▁"));
        }
    }
}
