//! The match test of DTW pairing: whether a source token aligned alone to a
//! target token counts as the same token, with the published code's quirk for
//! the first token of byte-level sources.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::text::markers::BYTE_LEVEL_MARKER;
use crate::text::symbols::first_occurrences;
use crate::text::token_bytes::NormalizedVocab;
use crate::vocab_map::VocabMap;

/// Token equality between the two vocabularies, for one normalization.
pub struct MatchTest {
    /// Per source id: the lowest target id whose string equals the source
    /// string with its marker swapped (bytes: with the same bytes; a special
    /// token: its counterpart by role), or -1. Also the candidates' images in
    /// hard mode.
    pub exact: Vec<i32>,
    /// Per target id: the lowest target id with the same string (bytes: the
    /// same bytes; a special token is its own class).
    target_class: Vec<u32>,
    /// Only for byte-level sources compared by marker.
    first_token: Option<FirstTokenQuirk>,
}

/// The published code prepends a space marker to a byte-level source token
/// aligned with a first target token that starts with one.
struct FirstTokenQuirk {
    source_marker: String,
    target_marker: String,
    /// Marker-swapped source string -> a source id with that string; built on
    /// first use.
    swapped_lookup: OnceLock<HashMap<String, u32>>,
}

impl MatchTest {
    /// Equality of the marker-swapped strings (the published behaviour).
    pub fn by_marker(source_tokens: &[String], target_tokens: &[String], source_marker: &str, target_marker: &str) -> Self {
        let (target_class, first_target) = first_occurrences(target_tokens);
        let exact = source_tokens
            .iter()
            .map(|s| first_target.get(s.replace(source_marker, target_marker).as_str()).map_or(-1, |&t| t as i32))
            .collect();
        let first_token = (source_marker == BYTE_LEVEL_MARKER).then(|| FirstTokenQuirk {
            source_marker: source_marker.to_string(),
            target_marker: target_marker.to_string(),
            swapped_lookup: OnceLock::new(),
        });
        MatchTest { exact, target_class, first_token }
    }

    /// Equality of the exact bytes; special tokens equal their counterparts by role only.
    pub fn by_bytes(source: &NormalizedVocab, target: &NormalizedVocab, special_pairs: &[(u32, u32)]) -> Self {
        let mut first_target: HashMap<&[u8], u32> = HashMap::with_capacity(target.len());
        for id in (0..target.len()).filter(|&id| target.is_image(id)) {
            first_target.entry(target.get(id)).or_insert(id as u32);
        }
        let target_class = (0..target.len())
            .map(|id| match target.is_special(id) {
                true => id as u32,
                false => first_target.get(target.get(id)).map_or(id as u32, |&t| t),
            })
            .collect();
        let paired: HashMap<u32, u32> = special_pairs.iter().copied().collect();
        let exact = (0..source.len())
            .map(|id| match source.is_special(id) {
                true => paired.get(&(id as u32)).map_or(-1, |&t| t as i32),
                false => first_target.get(source.get(id)).map_or(-1, |&t| t as i32),
            })
            .collect();
        MatchTest { exact, target_class, first_token: None }
    }

    /// Whether source token `source_id` aligned alone to target position `j`
    /// (token `target_id`) counts as matched: equal strings, or (with a map)
    /// a source token whose MinED image equals the target token.
    pub fn matches(
        &self,
        j: usize,
        source_id: usize,
        target_id: usize,
        map: Option<&VocabMap>,
        source_tokens: &[String],
        target_tokens: &[String],
    ) -> bool {
        let t_class = self.target_class[target_id] as i32;
        let same_as_target = |image: i32| self.target_class[image as usize] as i32 == t_class;
        if let Some(quirk) = self.first_token.as_ref().filter(|_| j == 0) {
            let target = &target_tokens[target_id];
            if target.starts_with(&quirk.target_marker) {
                let swapped = source_tokens[source_id].replace(&quirk.source_marker, &quirk.target_marker);
                if !swapped.starts_with(&quirk.target_marker) {
                    let prefixed = format!("{}{}", quirk.target_marker, swapped);
                    return prefixed == *target
                        || map.is_some_and(|map| {
                            quirk
                                .swapped_lookup(source_tokens)
                                .get(&prefixed)
                                .is_some_and(|&k| same_as_target(map.target_ids[k as usize]))
                        });
                }
            }
        }
        self.exact[source_id] == t_class || map.is_some_and(|map| same_as_target(map.target_ids[source_id]))
    }
}

impl FirstTokenQuirk {
    fn swapped_lookup(&self, source_tokens: &[String]) -> &HashMap<String, u32> {
        self.swapped_lookup.get_or_init(|| {
            let mut lookup = HashMap::with_capacity(source_tokens.len());
            for (k, s) in source_tokens.iter().enumerate() {
                lookup.entry(s.replace(&self.source_marker, &self.target_marker)).or_insert(k as u32);
            }
            lookup
        })
    }
}
