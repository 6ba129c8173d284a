//! Step 2 of FuseLLM: pair the positions of two tokenizations of the same
//! text. Either by dynamic time warping over token strings (the published
//! method: a target position aligned to exactly one source position whose
//! token matches it), or by the byte spans of the tokens.
//!
//! A pairing is, per target position, the paired source position or
//! [`UNMATCHED`].

pub mod bytes;
pub mod dtw;
pub mod dtw_cost;
pub mod matching;
pub mod stripped;

use crate::pairing::dtw::{dtw_align, DtwScratch};
use crate::pairing::dtw_cost::{DtwInputs, TextCosts};
use crate::pairing::stripped::StrippedVocab;

/// A target position without a source position.
pub const UNMATCHED: u32 = u32::MAX;

/// Per-thread buffers of DTW pairing, reused from text to text.
#[derive(Default)]
pub struct DtwPairing {
    costs: TextCosts,
    dtw: DtwScratch,
}

impl DtwPairing {
    /// Pairs each target position aligned to exactly one source position `i`
    /// for which `matches(j, i)` holds.
    pub fn pair(
        &mut self,
        vocab: &StrippedVocab,
        source: &[usize],
        target: &[usize],
        matches: impl Fn(usize, usize) -> bool,
        pairs: &mut Vec<u32>,
    ) {
        self.costs.load(vocab, source, target);
        let DtwInputs { source_ends, target_ends, remaining, mut cost } = self.costs.dtw_inputs();
        let spans = dtw_align(source_ends, target_ends, &remaining, &mut cost, &mut self.dtw);
        pairs.clear();
        pairs.extend(spans.iter().enumerate().map(|(j, span)| match span {
            Some((first, last)) if first == last && matches(j, *first as usize) => *first,
            _ => UNMATCHED,
        }));
    }
}
