//! Where the candidates' images in the target vocabulary come from, chosen once
//! per batch: the MinED map (soft mode), the exact marker-swapped or byte-equal
//! token (hard mode, or soft mode without a map), or the longest byte prefix
//! (`candidates="prefix"`).

use std::collections::HashMap;

use rayon::prelude::*;

use crate::aligner::options::{AlignOptions, Candidates, Values, VocabAlign};
use crate::text::token_bytes::NormalizedVocab;
use crate::vocab_map::VocabMap;

/// The image of every source id (-1: none), and how a row's candidates are
/// written with it.
#[derive(Clone, Copy)]
pub struct Images<'a> {
    table: &'a [i32],
    /// Candidates with one image are merged and written as log-probabilities
    /// (byte prefixes) rather than kept as the first of them, with its logit.
    merge: bool,
    /// The listed values are log-probabilities already: merged candidates add
    /// up their probabilities as they are, without a softmax over the list.
    calibrated: bool,
    one_hot_value: f32,
}

impl<'a> Images<'a> {
    /// The images `options` ask for: `prefix` must be given for prefix candidates.
    pub fn choose(options: &AlignOptions, map: Option<&'a VocabMap>, exact: &'a [i32], prefix: Option<&'a [i32]>) -> Self {
        let table = match (options.candidates, options.vocab_align, map) {
            (Candidates::Prefix, _, _) => prefix.expect("the prefix map is built for prefix candidates"),
            (Candidates::Mined, VocabAlign::Soft, Some(map)) => &map.target_ids,
            (Candidates::Mined, _, _) => exact,
        };
        Images {
            table,
            merge: options.candidates == Candidates::Prefix,
            calibrated: options.values == Values::LogProbs,
            one_hot_value: options.one_hot_value(),
        }
    }

    #[inline]
    pub fn of(&self, candidate: usize) -> i32 {
        self.table[candidate]
    }

    pub fn merge(&self) -> bool {
        self.merge
    }

    pub fn calibrated(&self) -> bool {
        self.calibrated
    }

    /// What a one-hot stand-in writes for its token ([`AlignOptions::one_hot_value`]).
    pub fn one_hot_value(&self) -> f32 {
        self.one_hot_value
    }
}

/// For every source id, the longest ordinary target token whose bytes start
/// the source token's bytes (a special token: its counterpart by role in
/// `special_pairs`), or -1. Runs on the current rayon pool.
pub fn prefix_images(source: &NormalizedVocab, target: &NormalizedVocab, special_pairs: &[(u32, u32)]) -> Vec<i32> {
    let mut by_bytes: HashMap<&[u8], u32> = HashMap::with_capacity(target.len());
    let mut longest = 0usize;
    for id in (0..target.len()).filter(|&id| target.is_image(id) && target.byte_len(id) > 0) {
        by_bytes.entry(target.get(id)).or_insert(id as u32);
        longest = longest.max(target.byte_len(id) as usize);
    }
    let paired: HashMap<u32, u32> = special_pairs.iter().copied().collect();
    (0..source.len())
        .into_par_iter()
        .map(|id| {
            if source.is_special(id) {
                return paired.get(&(id as u32)).map_or(-1, |&t| t as i32);
            }
            let bytes = source.get(id);
            (1..=bytes.len().min(longest))
                .rev()
                .find_map(|len| by_bytes.get(&bytes[..len]))
                .map_or(-1, |&t| t as i32)
        })
        .collect()
}
