//! Vocabulary families: how a vocabulary spells text in its token strings.

use crate::error::Result;
use crate::text::markers::{detect_marker, BYTE_LEVEL_MARKER};

/// How a vocabulary spells text in its token strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Every byte is one stand-in character of GPT-2's byte-to-unicode table.
    ByteLevel,
    /// Text as UTF-8 with `▁` for a space; `<0xNN>` for a single byte.
    SentencePiece,
}

impl Family {
    /// The family a space marker belongs to: `Ġ` is byte-level, anything else
    /// is read the SentencePiece way.
    pub fn of_marker(marker: &str) -> Family {
        if marker == BYTE_LEVEL_MARKER {
            Family::ByteLevel
        } else {
            Family::SentencePiece
        }
    }

    /// The family of a vocabulary, told by its space marker.
    pub fn detect(tokens: &[String], arg: &'static str) -> Result<Family> {
        detect_marker(tokens, arg).map(Family::of_marker)
    }
}
