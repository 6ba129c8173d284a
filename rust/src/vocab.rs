//! Token strings of a vocabulary: space markers, their detection, and the dense
//! symbol encoding that the edit-distance kernels work on.

use std::collections::HashMap;

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

/// Checks a marker given by the caller.
pub fn check_marker(marker: &str, arg: &'static str) -> Result<()> {
    if marker.is_empty() {
        return Err(Error::invalid(arg, "the space marker must be a non-empty string"));
    }
    Ok(())
}

/// Dense ids for the code points met so far, so that pattern tables are small
/// arrays rather than hash maps.
#[derive(Debug, Default, Clone)]
pub struct Alphabet {
    ids: HashMap<char, u32>,
}

impl Alphabet {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    fn encode_into(&mut self, text: &str, out: &mut Vec<u32>) {
        for c in text.chars() {
            let next = self.ids.len() as u32;
            out.push(*self.ids.entry(c).or_insert(next));
        }
    }
}

/// Many strings as symbol sequences in one flat buffer.
#[derive(Debug, Default, Clone)]
pub struct SymbolTable {
    symbols: Vec<u32>,
    offsets: Vec<usize>,
}

impl SymbolTable {
    /// Encodes every string of `strings`, growing `alphabet` as needed.
    pub fn encode<S: AsRef<str>>(strings: impl IntoIterator<Item = S>, alphabet: &mut Alphabet) -> Self {
        let mut table = SymbolTable { symbols: Vec::new(), offsets: vec![0] };
        for s in strings {
            alphabet.encode_into(s.as_ref(), &mut table.symbols);
            table.offsets.push(table.symbols.len());
        }
        table
    }

    /// Takes sequences already made of symbols (bytes are symbols 0..=255).
    pub fn from_sequences<T: IntoIterator<Item = u32>>(sequences: impl IntoIterator<Item = T>) -> Self {
        let mut table = SymbolTable { symbols: Vec::new(), offsets: vec![0] };
        for sequence in sequences {
            table.symbols.extend(sequence);
            table.offsets.push(table.symbols.len());
        }
        table
    }

    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    pub fn get(&self, index: usize) -> &[u32] {
        &self.symbols[self.offsets[index]..self.offsets[index + 1]]
    }
}

/// For every string, the lowest index holding an equal string (`classes`), and
/// a lookup from string to that index.
pub fn first_occurrences<S: AsRef<str>>(strings: &[S]) -> (Vec<u32>, HashMap<&str, u32>) {
    let mut first: HashMap<&str, u32> = HashMap::with_capacity(strings.len());
    let classes = strings
        .iter()
        .enumerate()
        .map(|(k, s)| *first.entry(s.as_ref()).or_insert(k as u32))
        .collect();
    (classes, first)
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
    fn text_lengths() {
        assert_eq!(text_length("<0x0A>", SENTENCEPIECE_MARKER), 1);
        assert_eq!(text_length("▁café", SENTENCEPIECE_MARKER), 6);
        assert_eq!(text_length("ĠcafÃ©", BYTE_LEVEL_MARKER), 6);
    }

    #[test]
    fn symbol_tables_share_an_alphabet() {
        let mut alphabet = Alphabet::default();
        let a = SymbolTable::encode(["ab", "", "ba"], &mut alphabet);
        let b = SymbolTable::encode(["bé"], &mut alphabet);
        assert_eq!(a.get(0), &[0, 1]);
        assert_eq!(a.get(1), &[] as &[u32]);
        assert_eq!(a.get(2), &[1, 0]);
        assert_eq!(b.get(0), &[1, 2]);
        assert_eq!(alphabet.len(), 3);
    }

    #[test]
    fn first_occurrence_classes() {
        let (classes, first) = first_occurrences(&["a", "b", "a"]);
        assert_eq!(classes, vec![0, 1, 0]);
        assert_eq!(first["a"], 0);
    }
}
