//! The two vocabularies with what their options resolve to: space markers
//! given or detected, families given or told by the markers, and the bytes of
//! every token.

use crate::aligner::options::{Normalize, Side, VocabularyOptions};
use crate::error::{Error, Result};
use crate::text::family::Family;
use crate::text::markers::resolve_marker;
use crate::text::token_bytes::NormalizedVocab;
use crate::vocab_map::{build_byte_vocab_map, build_vocab_map, VocabMap};

/// One side's vocabulary.
pub struct Vocabulary {
    /// Token strings in id order.
    pub tokens: Vec<String>,
    pub marker: String,
    pub bytes: NormalizedVocab,
}

/// Both sides, the special tokens that correspond by role, and what token
/// strings are compared as. Immutable; shared by the aligners made of it.
pub struct Vocabularies {
    pub source: Vocabulary,
    pub target: Vocabulary,
    /// (source id, target id) of special tokens with the same role.
    pub special_pairs: Vec<(u32, u32)>,
    pub normalize: Normalize,
}

impl Vocabularies {
    /// Resolves the options of both sides. The ends of `special_pairs` count
    /// as special tokens of their side.
    pub fn new(source_tokens: Vec<String>, target_tokens: Vec<String>, options: &VocabularyOptions<'_>) -> Result<Self> {
        let source_marker = resolve_marker(options.source_marker, &source_tokens, "source_marker", "source_tokens")?;
        let target_marker = resolve_marker(options.target_marker, &target_tokens, "target_marker", "target_tokens")?;
        for &(s, t) in options.special_pairs {
            if s as usize >= source_tokens.len() || t as usize >= target_tokens.len() {
                return Err(Error::invalid(
                    "special_token_map",
                    format!("pair ({s}, {t}) is outside the vocabularies ({}, {})", source_tokens.len(), target_tokens.len()),
                ));
            }
        }
        let side = |tokens: Vec<String>, marker: String, family: Option<Family>, special_ids: &[u32],
                    paired: fn(&(u32, u32)) -> u32, arg: &'static str| {
            let special: Vec<u32> = special_ids.iter().copied().chain(options.special_pairs.iter().map(paired)).collect();
            let family = family.unwrap_or_else(|| Family::of_marker(&marker));
            let bytes = NormalizedVocab::new(&tokens, family, &special, arg)?;
            Ok::<_, Error>(Vocabulary { tokens, marker, bytes })
        };
        Ok(Vocabularies {
            source: side(source_tokens, source_marker, options.source_family, options.source_special_ids, |p| p.0,
                         "source_special_ids")?,
            target: side(target_tokens, target_marker, options.target_family, options.target_special_ids, |p| p.1,
                         "target_special_ids")?,
            special_pairs: options.special_pairs.to_vec(),
            normalize: options.normalize,
        })
    }

    pub fn side(&self, side: Side) -> &Vocabulary {
        match side {
            Side::Source => &self.source,
            Side::Target => &self.target,
        }
    }

    /// The MinED map between the two vocabularies, their strings compared as
    /// `normalize` says. Runs on the current rayon pool.
    pub fn build_vocab_map(&self) -> Result<VocabMap> {
        let (source, target) = (&self.source, &self.target);
        match self.normalize {
            Normalize::Marker => build_vocab_map(&source.tokens, &target.tokens, &source.marker, &target.marker),
            Normalize::Bytes => {
                build_byte_vocab_map(&source.bytes, &target.bytes, &source.tokens, &target.tokens, &self.special_pairs)
            }
        }
    }
}
