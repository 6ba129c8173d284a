//! The aligner: both vocabularies prepared once, then batches of texts aligned
//! (FuseLLM's step 2) and their top-k distributions carried over to the target
//! vocabulary (step 3), in parallel over texts.

pub mod batch;
pub mod options;
mod text;
pub mod vocabularies;

use std::sync::{Arc, OnceLock};

use crate::aligner::batch::{AlignedOutput, BatchInput, TokenId};
use crate::aligner::options::{AlignOptions, Candidates, Normalize, VocabAlign, VocabularyOptions};
use crate::aligner::text::{Scratch, TextAligner};
use crate::aligner::vocabularies::Vocabularies;
use crate::error::{Error, Result};
use crate::pairing::matching::MatchTest;
use crate::pairing::stripped::StrippedVocab;
use crate::parallel::Workers;
use crate::remap::images::{prefix_images, Images};
use crate::vocab_map::VocabMap;

/// Both vocabularies, prepared once for any number of batches. Immutable but
/// for the maps built on first use; safe to share between threads.
pub struct Aligner {
    vocabularies: Arc<Vocabularies>,
    /// What the match test compares.
    match_test: MatchTest,
    /// What the DTW cost compares.
    stripped: StrippedVocab,
    vocab_map: OnceLock<VocabMap>,
    /// Per source id: the longest target image token whose bytes start the
    /// source token's bytes (a special token: its counterpart), or -1.
    prefix_map: OnceLock<Vec<i32>>,
}

impl Aligner {
    /// Prepares two vocabularies (token strings in id order).
    pub fn new(source_tokens: Vec<String>, target_tokens: Vec<String>, options: &VocabularyOptions<'_>) -> Result<Self> {
        Self::with_vocabularies(Arc::new(Vocabularies::new(source_tokens, target_tokens, options)?))
    }

    /// Prepares vocabularies read already (and maybe shared with others).
    pub fn with_vocabularies(vocabularies: Arc<Vocabularies>) -> Result<Self> {
        let (source, target) = (&vocabularies.source, &vocabularies.target);
        if source.tokens.is_empty() {
            return Err(Error::invalid("source_tokens", "the source vocabulary is empty"));
        }
        if target.tokens.is_empty() {
            return Err(Error::invalid("target_tokens", "the target vocabulary is empty"));
        }
        let (match_test, stripped) = match vocabularies.normalize {
            Normalize::Marker => (
                MatchTest::by_marker(&source.tokens, &target.tokens, &source.marker, &target.marker),
                StrippedVocab::by_marker(&source.tokens, &target.tokens, &source.marker, &target.marker),
            ),
            Normalize::Bytes => (
                MatchTest::by_bytes(&source.bytes, &target.bytes, &vocabularies.special_pairs),
                StrippedVocab::by_bytes(&source.bytes, &target.bytes),
            ),
        };
        Ok(Aligner { vocabularies, match_test, stripped, vocab_map: OnceLock::new(), prefix_map: OnceLock::new() })
    }

    pub fn vocabularies(&self) -> &Vocabularies {
        &self.vocabularies
    }

    /// The MinED map, if built or given.
    pub fn vocab_map(&self) -> Option<&VocabMap> {
        self.vocab_map.get()
    }

    /// Uses a map built elsewhere (checked against the vocabulary sizes).
    pub fn set_vocab_map(&self, map: VocabMap) -> Result<()> {
        let (source, target) = (&self.vocabularies.source, &self.vocabularies.target);
        map.check_sizes(source.tokens.len(), target.tokens.len())?;
        // A map set concurrently by another caller is the same map.
        let _ = self.vocab_map.set(map);
        Ok(())
    }

    /// The MinED map, built on `workers` threads unless present.
    pub fn ensure_vocab_map(&self, workers: Workers) -> Result<&VocabMap> {
        if let Some(map) = self.vocab_map.get() {
            return Ok(map);
        }
        let map = workers.install(|| self.vocabularies.build_vocab_map())??;
        Ok(self.vocab_map.get_or_init(|| map))
    }

    /// The byte-prefix image of every source id (-1: none), built on
    /// `workers` threads unless present.
    pub fn prefix_map(&self, workers: Workers) -> Result<&[i32]> {
        if let Some(map) = self.prefix_map.get() {
            return Ok(map);
        }
        let (source, target) = (&self.vocabularies.source, &self.vocabularies.target);
        let map = workers.install(|| prefix_images(&source.bytes, &target.bytes, &self.vocabularies.special_pairs))?;
        Ok(self.prefix_map.get_or_init(|| map))
    }

    /// Aligns a batch on `workers` threads. The MinED map is built first when
    /// `vocab_align` is soft, no map is present and the method or the
    /// candidates use it (`dtw`, `mined`); a text that `offsets` or `boundary`
    /// hand to DTW then matches tokens by equality only. The prefix map is
    /// built first for prefix candidates.
    pub fn align_batch<S: TokenId, C: TokenId>(
        &self,
        input: &BatchInput<'_, S, C>,
        options: &AlignOptions,
        workers: Workers,
    ) -> Result<AlignedOutput> {
        input.check()?;
        let map = match options.vocab_align {
            VocabAlign::Soft if options.needs_vocab_map() => Some(self.ensure_vocab_map(workers)?),
            VocabAlign::Soft => self.vocab_map(),
            VocabAlign::Hard => None,
        };
        let prefix = match options.candidates {
            Candidates::Prefix => Some(self.prefix_map(workers)?),
            Candidates::Mined => None,
        };
        let k_out = input.k.max(1);
        let texts = TextAligner {
            vocabularies: &self.vocabularies,
            match_test: &self.match_test,
            stripped: &self.stripped,
            options: *options,
            map,
            images: Images::choose(options, map, &self.match_test.exact, prefix),
            k_out,
        };
        let max_length = input.target_lengths.iter().copied().max().unwrap_or(0);
        let mut output = AlignedOutput::padding(input.batch(), max_length, k_out)?;
        let counts = workers.map_with(output.per_text(), Scratch::default, |scratch, (b, out)| {
            texts.align_text(b, input, scratch, out)
        })?;
        for text in counts {
            output.counts.add(&text?);
        }
        Ok(output)
    }
}

#[cfg(test)]
mod tests;
