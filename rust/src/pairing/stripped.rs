//! What the DTW cost compares: the token strings of both vocabularies without
//! their space markers (or, normalized to bytes, the bytes of the tokens), in
//! one alphabet, with equality classes shared by both sides so that equal
//! strings cost nothing to compare.

use crate::text::markers::text_length;
use crate::text::symbols::{shared_classes, Alphabet, SymbolTable};
use crate::text::token_bytes::NormalizedVocab;

/// One side's stripped strings.
pub struct StrippedSide {
    pub symbols: SymbolTable,
    /// Per token: its class, shared with the other side.
    pub class: Vec<u32>,
    /// Per token: the bytes of text it stands for, to guide the DTW search.
    pub text_len: Vec<u32>,
}

/// Both sides' stripped strings.
pub struct StrippedVocab {
    pub source: StrippedSide,
    pub target: StrippedSide,
    /// Number of classes over both sides.
    pub classes: usize,
    /// Number of distinct symbols over both sides.
    pub alphabet: usize,
}

impl StrippedVocab {
    /// The strings with their space markers removed (the published behaviour).
    pub fn by_marker(source_tokens: &[String], target_tokens: &[String], source_marker: &str, target_marker: &str) -> Self {
        let source_plain: Vec<String> = source_tokens.iter().map(|s| s.replace(source_marker, "")).collect();
        let target_plain: Vec<String> = target_tokens.iter().map(|s| s.replace(target_marker, "")).collect();
        let (source_class, target_class, classes) =
            shared_classes(source_plain.iter().map(String::as_str), target_plain.iter().map(String::as_str));
        let mut alphabet = Alphabet::default();
        let source_symbols = SymbolTable::encode(&source_plain, &mut alphabet);
        let target_symbols = SymbolTable::encode(&target_plain, &mut alphabet);
        let lengths = |tokens: &[String], marker: &str| tokens.iter().map(|t| text_length(t, marker)).collect();
        StrippedVocab {
            source: StrippedSide {
                symbols: source_symbols,
                class: source_class,
                text_len: lengths(source_tokens, source_marker),
            },
            target: StrippedSide {
                symbols: target_symbols,
                class: target_class,
                text_len: lengths(target_tokens, target_marker),
            },
            classes,
            alphabet: alphabet.len(),
        }
    }

    /// The exact bytes of the tokens (bytes are symbols 0..=255).
    pub fn by_bytes(source: &NormalizedVocab, target: &NormalizedVocab) -> Self {
        let (source_class, target_class, classes) =
            shared_classes((0..source.len()).map(|id| source.get(id)), (0..target.len()).map(|id| target.get(id)));
        let side = |vocab: &NormalizedVocab, class: Vec<u32>| StrippedSide {
            symbols: SymbolTable::from_sequences((0..vocab.len()).map(|id| vocab.get(id).iter().map(|&b| u32::from(b)))),
            class,
            text_len: (0..vocab.len()).map(|id| vocab.byte_len(id)).collect(),
        };
        StrippedVocab { source: side(source, source_class), target: side(target, target_class), classes, alphabet: 256 }
    }
}
