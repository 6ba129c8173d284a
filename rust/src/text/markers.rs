//! Space markers: the character a vocabulary writes for a leading space, how it
//! is told from the vocabulary when not given, and what it says about a token's
//! length.

use crate::error::{Error, Result};

/// Leading-space marker of SentencePiece vocabularies (Llama-2, Mistral, Gemma).
pub const SENTENCEPIECE_MARKER: &str = "\u{2581}";
/// Leading-space marker of byte-level BPE vocabularies (GPT-2, GPT-NeoX, MPT, Llama-3, Qwen).
pub const BYTE_LEVEL_MARKER: &str = "\u{120}";

/// The space marker a vocabulary uses: whichever of `▁` and `Ġ` occurs in more
/// token strings. Byte-level vocabularies spell `▁` as three stand-in characters
/// and SentencePiece vocabularies hold `Ġ` at most as a rare literal character,
/// so on real vocabularies the two counts are far apart.
pub fn detect_marker(tokens: &[String], arg: &'static str) -> Result<&'static str> {
    let count = |marker: &str| tokens.iter().filter(|t| t.contains(marker)).count();
    let sentencepiece = count(SENTENCEPIECE_MARKER);
    let byte_level = count(BYTE_LEVEL_MARKER);
    match sentencepiece.cmp(&byte_level) {
        std::cmp::Ordering::Greater => Ok(SENTENCEPIECE_MARKER),
        std::cmp::Ordering::Less => Ok(BYTE_LEVEL_MARKER),
        std::cmp::Ordering::Equal => Err(Error::MarkerDetection {
            arg,
            msg: format!(
                "cannot detect the space marker: {sentencepiece} tokens contain '\u{2581}' (SentencePiece) and \
                 {byte_level} contain '\u{120}' (byte-level BPE); pass the marker explicitly"
            ),
        }),
    }
}

/// The marker of one side: the one given (which must not be empty), or the one
/// detected from its tokens. Errors name `marker_arg` or `tokens_arg`.
pub fn resolve_marker(
    given: Option<&str>,
    tokens: &[String],
    marker_arg: &'static str,
    tokens_arg: &'static str,
) -> Result<String> {
    match given {
        Some("") => Err(Error::invalid(marker_arg, "the space marker must be a non-empty string")),
        Some(marker) => Ok(marker.to_string()),
        None => detect_marker(tokens, tokens_arg).map(str::to_string),
    }
}

/// How many bytes of text a token stands for, as far as its string tells: a
/// byte-fallback token `<0xNN>` is one byte, a byte-level vocabulary spells
/// every byte as one character, otherwise characters count in UTF-8 with the
/// space marker as one byte. Only used to guide the alignment search, so an
/// estimate is enough.
pub fn text_length(token: &str, marker: &str) -> u32 {
    let b = token.as_bytes();
    if b.len() == 6 && b.starts_with(b"<0x") && b[5] == b'>' && b[3..5].iter().all(u8::is_ascii_hexdigit) {
        return 1;
    }
    if marker == BYTE_LEVEL_MARKER {
        return token.chars().count() as u32;
    }
    let markers = token.matches(marker).count();
    (token.len() - markers * marker.len() + markers) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn detects_markers() {
        assert_eq!(detect_marker(&strings(&["▁the", "a", "▁cat"]), "t").unwrap(), SENTENCEPIECE_MARKER);
        assert_eq!(detect_marker(&strings(&["Ġthe", "a", "Ġ"]), "t").unwrap(), BYTE_LEVEL_MARKER);
        let err = detect_marker(&strings(&["the", "cat"]), "source_tokens").unwrap_err();
        assert!(err.to_string().starts_with("source_tokens: cannot detect"));
    }

    #[test]
    fn given_markers_are_kept_unless_empty() {
        let tokens = strings(&["the"]);
        assert_eq!(resolve_marker(Some("_"), &tokens, "source_marker", "source_tokens").unwrap(), "_");
        let err = resolve_marker(Some(""), &tokens, "source_marker", "source_tokens").unwrap_err();
        assert_eq!(err.to_string(), "source_marker: the space marker must be a non-empty string");
        let err = resolve_marker(None, &tokens, "source_marker", "source_tokens").unwrap_err();
        assert!(matches!(err, Error::MarkerDetection { arg: "source_tokens", .. }));
    }

    #[test]
    fn text_lengths() {
        assert_eq!(text_length("<0x0A>", SENTENCEPIECE_MARKER), 1);
        assert_eq!(text_length("▁café", SENTENCEPIECE_MARKER), 6);
        assert_eq!(text_length("ĠcafÃ©", BYTE_LEVEL_MARKER), 6);
    }
}
