//! Step 1 of FuseLLM: map every source token to the target token at minimum edit
//! distance (MinED), ties to the lowest target id.
//!
//! The result is exactly the brute-force one, but most of the |V_s| x |V_t| pairs
//! are never compared: targets are bucketed by length and visited in order of
//! length difference, a pair is skipped when a lower bound already exceeds the
//! best distance found (length difference, and characters present in one string
//! only, kept as 64-bit signatures), and the remaining pairs run the bit-parallel
//! kernel with an early exit at the current best.

use std::collections::HashMap;

use rayon::prelude::*;

use crate::edit_distance::{dp_distance, PatternTable};
use crate::error::{Error, Result};
use crate::normalize::NormalizedVocab;
use crate::vocab::{Alphabet, SymbolTable};

/// MinED image of every source token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VocabMap {
    /// Target id of each source id's image.
    pub target_ids: Vec<i32>,
    /// Edit distance to that image; 0 where the marker-swapped source string is a
    /// target token.
    pub distances: Vec<i32>,
}

/// The signature bit of a symbol.
#[inline]
fn bucket(symbol: u32) -> u32 {
    symbol.wrapping_mul(0x9E37_79B9) >> 26
}

/// A 64-bit set of hashed symbols: a bit set in one string's signature and not in
/// the other's stands for a character that needs an edit.
#[inline]
fn signature(symbols: &[u32]) -> u64 {
    symbols.iter().fold(0u64, |sig, &s| sig | 1u64 << bucket(s))
}

/// The string being mapped, with what the lower bounds need.
struct Query<'a> {
    symbols: &'a [u32],
    signature: u64,
    /// Occurrences per signature bit: an upper bound of how many of its symbols
    /// can match a string with that bit set.
    counts: [u8; 64],
}

impl<'a> Query<'a> {
    fn new(symbols: &'a [u32]) -> Self {
        let mut counts = [0u8; 64];
        for &s in symbols {
            let c = &mut counts[bucket(s) as usize];
            *c = c.saturating_add(1);
        }
        Query { symbols, signature: signature(symbols), counts }
    }

    /// Whether a string of `len` symbols with signature `sig` can beat `best`
    /// (at `id`), by lower bounds of its distance: characters present in one
    /// string only need an edit each, and an alignment has at most as many
    /// matches as the strings share symbols.
    #[inline]
    fn may_beat(&self, best: &Best, id: u32, length_gap: u32, len: usize, sig: u64) -> bool {
        let only_one_side = (sig & !self.signature).count_ones().max((self.signature & !sig).count_ones());
        if !best.beaten_by(length_gap.max(only_one_side), id) {
            return false;
        }
        let mut shared = sig & self.signature;
        let mut matches = 0u32;
        while shared != 0 {
            matches += u32::from(self.counts[shared.trailing_zeros() as usize]);
            shared &= shared - 1;
        }
        let longest = self.symbols.len().max(len) as u32;
        best.beaten_by(longest.saturating_sub(matches.min(len as u32)), id)
    }
}

/// Target strings of one length, in increasing id order.
#[derive(Default)]
struct LengthBucket {
    ids: Vec<u32>,
    signatures: Vec<u64>,
}

struct TargetIndex<'a> {
    symbols: &'a SymbolTable,
    buckets: Vec<LengthBucket>,
}

#[derive(Clone, Copy)]
struct Best {
    distance: u32,
    id: u32,
}

impl Best {
    #[inline]
    fn beaten_by(&self, distance: u32, id: u32) -> bool {
        distance < self.distance || (distance == self.distance && id < self.id)
    }
}

/// Hash of a symbol sequence with the symbol at `skip` left out (`None`: none).
#[inline]
fn hash_without(symbols: &[u32], skip: Option<usize>) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for (k, &s) in symbols.iter().enumerate() {
        if Some(k) != skip {
            h = (h ^ u64::from(s)).wrapping_mul(0x0000_0100_0000_01B3).rotate_left(5);
        }
    }
    h
}

/// Every target string at distance exactly 1 from a query, found through
/// one-deletion variants (a string at distance 1 differs by one insertion,
/// deletion or substitution, so one deletion on one or both sides makes the
/// strings equal). Keys are hashes, so every hit is verified.
struct DeletionIndex {
    /// (hash of the whole string, id).
    whole: Vec<(u64, u32)>,
    /// (hash of the string without one symbol, id, position of that symbol).
    deleted: Vec<(u64, u32, u32)>,
}

impl DeletionIndex {
    fn new(symbols: &SymbolTable, ids: impl Iterator<Item = u32>) -> Self {
        let (mut whole, mut deleted) = (Vec::new(), Vec::new());
        for id in ids {
            let t = symbols.get(id as usize);
            whole.push((hash_without(t, None), id));
            deleted.extend((0..t.len()).map(|k| (hash_without(t, Some(k)), id, k as u32)));
        }
        whole.sort_unstable();
        deleted.sort_unstable();
        DeletionIndex { whole, deleted }
    }

    /// Ids whose whole-string hash is `h`.
    fn whole_matching(&self, h: u64) -> impl Iterator<Item = u32> + '_ {
        let start = self.whole.partition_point(|e| e.0 < h);
        self.whole[start..].iter().take_while(move |e| e.0 == h).map(|e| e.1)
    }

    /// (id, position) of deletion variants whose hash is `h`.
    fn deleted_matching(&self, h: u64) -> impl Iterator<Item = (u32, u32)> + '_ {
        let start = self.deleted.partition_point(|e| e.0 < h);
        self.deleted[start..].iter().take_while(move |e| e.0 == h).map(|e| (e.1, e.2))
    }

    /// The lowest id at distance exactly 1 from `query` (which is no target string).
    fn nearest_at_one(&self, query: &[u32], symbols: &SymbolTable, table: &PatternTable) -> Option<u32> {
        let mut best: Option<u32> = None;
        let mut consider = |id: u32| {
            if best.is_none_or(|b| id < b) && table.bounded_distance(symbols.get(id as usize), 1).is_some() {
                best = Some(id);
            }
        };
        // The target has one more symbol.
        for (id, _) in self.deleted_matching(hash_without(query, None)) {
            consider(id);
        }
        for k in 0..query.len() {
            let h = hash_without(query, Some(k));
            // The target has one symbol less.
            self.whole_matching(h).for_each(&mut consider);
            // One symbol differs, at the same position.
            for (id, pos) in self.deleted_matching(h) {
                if pos as usize == k {
                    consider(id);
                }
            }
        }
        best
    }
}

impl TargetIndex<'_> {
    fn scan(&self, bucket: &LengthBucket, bucket_len: usize, length_gap: u32, query: &Query<'_>,
            table: &PatternTable, best: &mut Best) {
        let source = query.symbols;
        for (&id, &sig) in bucket.ids.iter().zip(&bucket.signatures) {
            if length_gap == best.distance && id > best.id {
                break; // every later id is larger and no closer
            }
            if !query.may_beat(best, id, length_gap, bucket_len, sig) {
                continue;
            }
            let limit = if id < best.id { best.distance } else { best.distance - 1 };
            let target = self.symbols.get(id as usize);
            let distance = if source.len() <= 64 {
                table.bounded_distance(target, limit)
            } else {
                Some(dp_distance(source, target)).filter(|&d| d <= limit)
            };
            if let Some(d) = distance {
                if best.beaten_by(d, id) {
                    *best = Best { distance: d, id };
                }
            }
        }
    }

    /// The nearest target to `source`, which `table` already holds as its
    /// pattern (when it fits in 64 symbols).
    fn nearest(&self, source: &[u32], table: &PatternTable) -> Best {
        let query = Query::new(source);
        let len = source.len();
        let mut best = Best { distance: u32::MAX, id: u32::MAX };
        for gap in 0..=len.max(self.buckets.len()) {
            if gap as u32 > best.distance {
                break;
            }
            let shorter = len.checked_sub(gap).filter(|_| gap > 0);
            for bucket_len in [Some(len + gap), shorter].into_iter().flatten() {
                if let Some(bucket) = self.buckets.get(bucket_len) {
                    self.scan(bucket, bucket_len, gap as u32, &query, table, &mut best);
                }
            }
        }
        best
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
    let mut buckets: Vec<LengthBucket> = Vec::new();
    for &id in candidates {
        let symbols = target.get(id as usize);
        if *first_target.entry(symbols).or_insert(id) != id {
            continue; // a repeated string never beats its first occurrence
        }
        if buckets.len() <= symbols.len() {
            buckets.resize_with(symbols.len() + 1, LengthBucket::default);
        }
        let bucket = &mut buckets[symbols.len()];
        bucket.ids.push(id);
        bucket.signatures.push(signature(symbols));
    }
    let distance_one = DeletionIndex::new(target, buckets.iter().flat_map(|b| b.ids.iter().copied()));
    let index = TargetIndex { symbols: target, buckets };

    (0..source.len())
        .into_par_iter()
        .map_init(
            || PatternTable::new(alphabet),
            |table, k| {
                let query = source.get(k);
                if let Some(&id) = first_target.get(query) {
                    return (id as i32, 0);
                }
                if table.set(query) {
                    if let Some(id) = distance_one.nearest_at_one(query, target, table) {
                        return (id as i32, 1);
                    }
                }
                // The table still holds `query` as its pattern.
                let best = index.nearest(query, table);
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
        use crate::normalize::Family;
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
        use crate::normalize::{append_token_bytes, Family};
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
            use crate::normalize::Family;
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
    }
}
