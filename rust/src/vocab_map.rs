//! Step 1 of FuseLLM: map every source token to the target token at minimum edit
//! distance (MinED), ties to the lowest target id.
//!
//! The result is exactly the brute-force one, but most of the |V_s| x |V_t| pairs
//! are never compared: targets are bucketed by length and visited in order of
//! length difference, a pair is skipped when a lower bound already exceeds the
//! best distance found (length difference, and characters present in one string
//! only, kept as 64-bit signatures), and the remaining pairs run the bit-parallel
//! kernel with an early exit at the current best.

use rayon::prelude::*;

use crate::edit_distance::{dp_distance, PatternTable};
use crate::error::{Error, Result};
use crate::vocab::{first_occurrences, Alphabet, SymbolTable};

/// MinED image of every source token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VocabMap {
    /// Target id of each source id's image.
    pub target_ids: Vec<i32>,
    /// Edit distance to that image; 0 where the marker-swapped source string is a
    /// target token.
    pub distances: Vec<i32>,
}

/// A 64-bit set of hashed symbols: a bit set in one string's signature and not in
/// the other's stands for a character that needs an edit.
#[inline]
fn signature(symbols: &[u32]) -> u64 {
    symbols.iter().fold(0u64, |sig, &s| sig | 1u64 << (s.wrapping_mul(0x9E37_79B9) >> 26))
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

impl TargetIndex<'_> {
    fn scan(&self, bucket: &LengthBucket, length_gap: u32, source: &[u32], signature: u64,
            table: &PatternTable, best: &mut Best) {
        for (&id, &sig) in bucket.ids.iter().zip(&bucket.signatures) {
            if length_gap == best.distance && id > best.id {
                break; // every later id is larger and no closer
            }
            let lower = length_gap
                .max((sig & !signature).count_ones())
                .max((signature & !sig).count_ones());
            if !best.beaten_by(lower, id) {
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

    fn nearest(&self, source: &[u32], table: &mut PatternTable) -> Best {
        table.set(source);
        let signature = signature(source);
        let len = source.len();
        let mut best = Best { distance: u32::MAX, id: u32::MAX };
        for gap in 0..=len.max(self.buckets.len()) {
            if gap as u32 > best.distance {
                break;
            }
            let shorter = len.checked_sub(gap).filter(|_| gap > 0);
            for bucket_len in [Some(len + gap), shorter].into_iter().flatten() {
                if let Some(bucket) = self.buckets.get(bucket_len) {
                    self.scan(bucket, gap as u32, source, signature, table, &mut best);
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
    let (_, first_target) = first_occurrences(target);

    let mut alphabet = Alphabet::default();
    let target_symbols = SymbolTable::encode(target.iter().map(AsRef::as_ref), &mut alphabet);
    let source_symbols = SymbolTable::encode(&swapped, &mut alphabet);

    let mut buckets: Vec<LengthBucket> = Vec::new();
    for (id, s) in target.iter().enumerate() {
        if first_target[s.as_ref()] != id as u32 {
            continue; // a repeated string never beats its first occurrence
        }
        let symbols = target_symbols.get(id);
        if buckets.len() <= symbols.len() {
            buckets.resize_with(symbols.len() + 1, LengthBucket::default);
        }
        let bucket = &mut buckets[symbols.len()];
        bucket.ids.push(id as u32);
        bucket.signatures.push(signature(symbols));
    }
    let index = TargetIndex { symbols: &target_symbols, buckets };

    let pairs: Vec<(i32, i32)> = swapped
        .par_iter()
        .enumerate()
        .map_init(
            || PatternTable::new(alphabet.len()),
            |table, (k, s)| match first_target.get(s.as_str()) {
                Some(&id) => (id as i32, 0),
                None => {
                    let best = index.nearest(source_symbols.get(k), table);
                    (best.id as i32, best.distance as i32)
                }
            },
        )
        .collect();
    let (target_ids, distances) = pairs.into_iter().unzip();
    Ok(VocabMap { target_ids, distances })
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

    proptest! {
        #[test]
        fn equals_brute_force(source in proptest::collection::vec("[abĠ▁é]{0,6}", 1..30),
                              target in proptest::collection::vec("[ab▁éc]{0,6}", 1..30)) {
            let fast = build_vocab_map(&source, &target, "Ġ", "▁").unwrap();
            prop_assert_eq!(fast, brute_force(&source, &target, "Ġ", "▁"));
        }
    }
}
