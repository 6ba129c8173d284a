//! Pairing by byte offsets (`offsets`, `boundary`): every token of a text
//! covers a byte span, from the cumulative lengths of its exact bytes, and
//! target tokens pair with source tokens that end (and, for `offsets`, start)
//! at the same byte. O(n + m) per text, no edit distances.

use crate::pairing::UNMATCHED;

/// Where two spellings of a text agree: equal bytes, or one side with one
/// extra leading space (SentencePiece's dummy prefix), which is then taken off
/// its ends. `false` when the texts differ otherwise.
pub fn reconcile(source: &[u8], target: &[u8], source_ends: &mut [u32], target_ends: &mut [u32]) -> bool {
    let one_space_more = |longer: &[u8], shorter: &[u8]| longer.first() == Some(&b' ') && &longer[1..] == shorter;
    if source == target {
        return true;
    }
    let shifted = if one_space_more(source, target) {
        source_ends
    } else if one_space_more(target, source) {
        target_ends
    } else {
        return false;
    };
    for end in shifted {
        *end = end.saturating_sub(1);
    }
    true
}

/// Pairs each target token with the source token ending at the same byte (and,
/// for `offsets`, starting there too); empty tokens are never paired. Ends are
/// non-decreasing and a non-empty token ends after every earlier one, so one
/// forward walk over both sides finds every pair.
pub fn pair_by_bytes(source_ends: &[u32], target_ends: &[u32], same_start: bool, pairs: &mut Vec<u32>) {
    pairs.clear();
    let start = |ends: &[u32], k: usize| if k == 0 { 0 } else { ends[k - 1] };
    let mut i = 0usize;
    for (j, &end) in target_ends.iter().enumerate() {
        let target_start = start(target_ends, j);
        let mut pair = UNMATCHED;
        if end > target_start {
            while i < source_ends.len() && source_ends[i] < end {
                i += 1;
            }
            let ending_here = source_ends[i..].iter().take_while(|&&e| e == end).count();
            if let Some(k) = (i..i + ending_here).find(|&k| start(source_ends, k) < end) {
                if !same_start || start(source_ends, k) == target_start {
                    pair = k as u32;
                }
            }
        }
        pairs.push(pair);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: u32 = UNMATCHED;

    #[test]
    fn ends_pair_with_equal_ends_and_offsets_with_equal_spans() {
        // " un|believ|able" ends at 3, 9, 13; " unbel|iev|able" at 6, 9, 13.
        let (source, target) = ([3, 9, 13], [6, 9, 13]);
        let mut pairs = Vec::new();
        pair_by_bytes(&source, &target, false, &mut pairs);
        assert_eq!(pairs, [U, 1, 2]);
        pair_by_bytes(&source, &target, true, &mut pairs);
        assert_eq!(pairs, [U, U, 2]);
    }

    #[test]
    fn one_leading_space_more_shifts_that_side() {
        let (mut source_ends, mut target_ends) = (vec![5, 11], vec![6, 12]);
        assert!(reconcile(b"Hello world", b" Hello world", &mut source_ends, &mut target_ends));
        assert_eq!((source_ends, target_ends), (vec![5, 11], vec![5, 11]));
        assert!(!reconcile(b"Hello", b"Help", &mut [5], &mut [4]));
    }
}
