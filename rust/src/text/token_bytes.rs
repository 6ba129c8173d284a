//! The exact bytes of text every token stands for.
//!
//! Byte-level BPE vocabularies (GPT-2, GPT-NeoX, Llama-3, Qwen2, Tekken) spell each
//! byte as one printable stand-in character (`Ġ` for a space, `Ã©` for the two
//! bytes of `é`); SentencePiece vocabularies (Llama-2, Mistral, Gemma) write a
//! space as `▁` and bytes outside the vocabulary as `<0xNN>` tokens. Turning both
//! into bytes makes `ĠcafÃ©` and `▁café` equal, and gives every token of a text a
//! byte span, the basis of the linear-time alignments. Special tokens (BOS, EOS,
//! chat-template controls) stand for no text: they get no bytes and are flagged.

use std::sync::OnceLock;

use crate::error::{Error, Result};
use crate::limits::byte_offset;
use crate::text::family::Family;
use crate::text::markers::SENTENCEPIECE_MARKER;

/// The byte each stand-in character of the byte-level alphabet spells, indexed
/// by code point (all stand-ins lie below U+0200); -1 for other characters.
fn byte_level_decoding() -> &'static [i16; 512] {
    static TABLE: OnceLock<[i16; 512]> = OnceLock::new();
    TABLE.get_or_init(|| {
        // Printable Latin-1 bytes stand for themselves; the others take code
        // points from U+0100 upwards in byte order (GPT-2's bytes_to_unicode).
        let printable = |b: u32| (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        let mut table = [-1i16; 512];
        let mut next = 256usize;
        for b in 0..256u32 {
            if printable(b) {
                table[b as usize] = b as i16;
            } else {
                table[next] = b as i16;
                next += 1;
            }
        }
        table
    })
}

/// The byte of a `<0xNN>` byte-fallback token.
fn fallback_byte(token: &str) -> Option<u8> {
    let b = token.as_bytes();
    let hex = b.strip_prefix(b"<0x")?.strip_suffix(b">")?;
    (hex.len() == 2 && hex.iter().all(u8::is_ascii_hexdigit))
        .then(|| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok())
        .flatten()
}

/// Appends the bytes `token` stands for. Total: a character outside the
/// byte-level alphabet (found only in added tokens) stands for its own UTF-8.
pub fn append_token_bytes(token: &str, family: Family, out: &mut Vec<u8>) {
    match family {
        Family::ByteLevel => {
            let table = byte_level_decoding();
            for c in token.chars() {
                match table.get(c as usize).copied().filter(|&b| b >= 0) {
                    Some(b) => out.push(b as u8),
                    None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                }
            }
        }
        Family::SentencePiece => match fallback_byte(token) {
            Some(b) => out.push(b),
            None => {
                for piece in token.split_inclusive(SENTENCEPIECE_MARKER) {
                    match piece.strip_suffix(SENTENCEPIECE_MARKER) {
                        Some(text) => {
                            out.extend_from_slice(text.as_bytes());
                            out.push(b' ');
                        }
                        None => out.extend_from_slice(piece.as_bytes()),
                    }
                }
            }
        },
    }
}

/// Bytes moved at once when tokens are concatenated: most tokens are shorter,
/// so one fixed-size move (a single vector load and store) copies a token.
const CHUNK: usize = 16;

/// The last byte of an inline spelling holds the token's length, or this for
/// a token too long to be spelled inline.
const LONG: u8 = u8::MAX;

/// The bytes of every token of a vocabulary in one flat buffer, and which
/// tokens are special (those have no bytes).
#[derive(Debug, Clone)]
pub struct NormalizedVocab {
    bytes: Vec<u8>,
    /// Per token: its bytes padded to [`CHUNK`], the last byte its length (or
    /// [`LONG`]). Concatenating reads one line per token instead of its offset
    /// and then its bytes.
    inline: Vec<[u8; CHUNK]>,
    offsets: Vec<u32>,
    special: Vec<bool>,
    /// Byte-fallback tokens `<0xNN>` whose byte is also an ordinary token
    /// (`<0x61>` and `a`): the tokenizer never emits them, so the ordinary
    /// spelling is the one to map onto.
    shadowed: Vec<bool>,
}

impl NormalizedVocab {
    /// Normalizes `tokens`; `special_ids` are the ids that stand for no text.
    pub fn new(tokens: &[String], family: Family, special_ids: &[u32], arg: &'static str) -> Result<Self> {
        let mut special = vec![false; tokens.len()];
        for &id in special_ids {
            match special.get_mut(id as usize) {
                Some(flag) => *flag = true,
                None => {
                    return Err(Error::invalid(
                        arg,
                        format!("special id {id} is outside the vocabulary (size {})", tokens.len()),
                    ))
                }
            }
        }
        let mut bytes = Vec::with_capacity(tokens.iter().map(String::len).sum());
        let mut offsets = Vec::with_capacity(tokens.len() + 1);
        offsets.push(0u32);
        for (token, &is_special) in tokens.iter().zip(&special) {
            if !is_special {
                append_token_bytes(token, family, &mut bytes);
            }
            offsets.push(bytes.len() as u32);
        }
        let mut single_byte_tokens = [false; 256];
        let fallback = |token: &str| (family == Family::SentencePiece).then(|| fallback_byte(token)).flatten();
        for (k, token) in tokens.iter().enumerate() {
            if !special[k] && offsets[k + 1] - offsets[k] == 1 && fallback(token).is_none() {
                single_byte_tokens[bytes[offsets[k] as usize] as usize] = true;
            }
        }
        let shadowed = tokens
            .iter()
            .zip(&special)
            .map(|(token, &is_special)| !is_special && fallback(token).is_some_and(|b| single_byte_tokens[b as usize]))
            .collect();
        let inline = offsets
            .windows(2)
            .map(|span| {
                let token = &bytes[span[0] as usize..span[1] as usize];
                let mut spelled = [0u8; CHUNK];
                if token.len() < CHUNK {
                    spelled[..token.len()].copy_from_slice(token);
                    spelled[CHUNK - 1] = token.len() as u8;
                } else {
                    spelled[CHUNK - 1] = LONG;
                }
                spelled
            })
            .collect();
        Ok(NormalizedVocab { bytes, offsets, special, shadowed, inline })
    }

    pub fn len(&self) -> usize {
        self.special.len()
    }

    pub fn is_empty(&self) -> bool {
        self.special.is_empty()
    }

    /// The bytes of token `id` (empty for a special token).
    #[inline]
    pub fn get(&self, id: usize) -> &[u8] {
        &self.bytes[self.offsets[id] as usize..self.offsets[id + 1] as usize]
    }

    /// The bytes of `ids` one after the other into `text`, and each token's
    /// end (cumulative byte count) into `ends`; an error naming `arg` when the
    /// text spells more bytes than 32-bit ends address.
    pub fn concatenate(&self, ids: &[usize], text: &mut Vec<u8>, ends: &mut Vec<u32>, arg: &'static str) -> Result<()> {
        ends.clear();
        // Room for typical tokens and the last one's fixed-size move; grown for
        // long ones, cut off at the end.
        text.resize(ids.len() * 8 + CHUNK, 0);
        let mut at = 0usize;
        for &id in ids {
            let spelled = &self.inline[id];
            let len = match spelled[CHUNK - 1] {
                LONG => self.byte_len(id) as usize,
                len => len as usize,
            };
            if at + len + CHUNK > text.len() {
                text.resize(2 * (at + len + CHUNK), 0);
            }
            if len < CHUNK {
                // The bytes after the token are overwritten or cut off.
                text[at..at + CHUNK].copy_from_slice(spelled);
            } else {
                text[at..at + len].copy_from_slice(self.get(id));
            }
            at += len;
            ends.push(byte_offset(at, arg, "a text")?);
        }
        text.truncate(at);
        Ok(())
    }

    /// Number of bytes of token `id`.
    #[inline]
    pub fn byte_len(&self, id: usize) -> u32 {
        self.offsets[id + 1] - self.offsets[id]
    }

    #[inline]
    pub fn is_special(&self, id: usize) -> bool {
        self.special[id]
    }

    /// Whether token `id` is what other tokens map onto: an ordinary token and
    /// the canonical spelling of its bytes.
    #[inline]
    pub fn is_image(&self, id: usize) -> bool {
        !self.special[id] && !self.shadowed[id]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of(token: &str, family: Family) -> Vec<u8> {
        let mut out = Vec::new();
        append_token_bytes(token, family, &mut out);
        out
    }

    #[test]
    fn both_spellings_of_a_word_with_an_accent_agree() {
        assert_eq!(bytes_of("ĠcafÃ©", Family::ByteLevel), " café".as_bytes());
        assert_eq!(bytes_of("▁café", Family::SentencePiece), " café".as_bytes());
    }

    #[test]
    fn whitespace_and_byte_fallback() {
        assert_eq!(bytes_of("ĊĉĠĠ", Family::ByteLevel), b"\n\t  ");
        assert_eq!(bytes_of("<0x0A>", Family::SentencePiece), b"\n");
        assert_eq!(bytes_of("<0xE2>", Family::SentencePiece), [0xE2]);
        assert_eq!(bytes_of("▁▁a▁", Family::SentencePiece), b"  a ");
        assert_eq!(bytes_of("<0x0G>", Family::SentencePiece), b"<0x0G>");
    }

    #[test]
    fn a_character_split_across_byte_level_tokens() {
        // "€" is E2 82 AC: one token may hold its first byte, the next the rest.
        let mut out = bytes_of("â", Family::ByteLevel);
        out.extend(bytes_of("Ĥ¬", Family::ByteLevel));
        assert_eq!(out, "€".as_bytes());
    }

    #[test]
    fn byte_level_table_is_a_bijection() {
        let table = byte_level_decoding();
        let mut seen = [false; 256];
        for &b in table.iter().filter(|&&b| b >= 0) {
            assert!(!seen[b as usize]);
            seen[b as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(table['Ġ' as usize], 32);
    }

    #[test]
    fn special_tokens_have_no_bytes() {
        let tokens: Vec<String> = ["<s>", "Ġa", "<|endoftext|>"].iter().map(|s| s.to_string()).collect();
        let vocab = NormalizedVocab::new(&tokens, Family::ByteLevel, &[0, 2], "t").unwrap();
        assert_eq!(vocab.get(0), b"");
        assert_eq!(vocab.get(1), b" a");
        assert!(vocab.is_special(2) && !vocab.is_special(1));
        let err = NormalizedVocab::new(&tokens, Family::ByteLevel, &[3], "source_special_ids").unwrap_err();
        assert!(err.to_string().starts_with("source_special_ids: special id 3"));
    }

    #[test]
    fn byte_tokens_with_an_ordinary_twin_are_no_images() {
        let tokens: Vec<String> = ["<0x61>", "<0xE2>", "a", "▁"].iter().map(|s| s.to_string()).collect();
        let vocab = NormalizedVocab::new(&tokens, Family::SentencePiece, &[], "t").unwrap();
        assert_eq!((0..4).map(|id| vocab.is_image(id)).collect::<Vec<_>>(), [false, true, true, true]);
    }

    proptest::proptest! {
        #[test]
        fn concatenation_equals_the_tokens_bytes_one_after_another(
            tokens in proptest::collection::vec("[aĠé€]{0,24}", 1..12),
            ids in proptest::collection::vec(0usize..12, 0..40),
            reused in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        ) {
            let vocab = NormalizedVocab::new(&tokens, Family::ByteLevel, &[0], "t").unwrap();
            let ids: Vec<usize> = ids.into_iter().map(|id| id % tokens.len()).collect();
            let (mut text, mut ends) = (reused, vec![7u32; 3]);
            vocab.concatenate(&ids, &mut text, &mut ends, "t").unwrap();
            let expected: Vec<u8> = ids.iter().flat_map(|&id| vocab.get(id).to_vec()).collect();
            let expected_ends: Vec<u32> = ids
                .iter()
                .scan(0u32, |total, &id| { *total += vocab.get(id).len() as u32; Some(*total) })
                .collect();
            proptest::prop_assert_eq!(text, expected);
            proptest::prop_assert_eq!(ends, expected_ends);
        }
    }
}
