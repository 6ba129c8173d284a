//! Every option of the aligner, with the names the Python API gives its
//! values, and the rules that follow from them.

use crate::text::family::Family;

/// An option whose values have names (the strings of the Python API).
pub trait Choice: Copy + PartialEq + 'static {
    /// Every value with its name, in the order an error message lists them.
    const NAMES: &'static [(&'static str, Self)];

    fn from_name(name: &str) -> Option<Self> {
        Self::NAMES.iter().find(|(n, _)| *n == name).map(|&(_, value)| value)
    }

    fn name(self) -> &'static str {
        Self::NAMES.iter().find(|(_, v)| *v == self).map(|&(n, _)| n).expect("every value is named")
    }
}

/// How a matched position's candidate tokens reach the target vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VocabAlign {
    /// Through the MinED map: every candidate has an image (the paper's default).
    Soft,
    /// Only candidates whose marker-swapped string is a target token.
    Hard,
}

impl Choice for VocabAlign {
    const NAMES: &'static [(&'static str, Self)] = &[("soft", VocabAlign::Soft), ("hard", VocabAlign::Hard)];
}

/// Which target token a one-hot stand-in puts its mass on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OneHot {
    /// The next target token, as the stored distributions predict the next token;
    /// the last position gets no distribution.
    Next,
    /// The current target token (the published code's off-by-one behaviour).
    Current,
}

impl Choice for OneHot {
    const NAMES: &'static [(&'static str, Self)] = &[("next", OneHot::Next), ("current", OneHot::Current)];
}

/// What token strings are compared as, for the DTW cost, the match test and the
/// MinED map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalize {
    /// The strings with the space marker swapped or removed (the published behaviour).
    Marker,
    /// The exact bytes each token stands for; special tokens have none.
    Bytes,
}

impl Choice for Normalize {
    const NAMES: &'static [(&'static str, Self)] = &[("marker", Normalize::Marker), ("bytes", Normalize::Bytes)];
}

/// How target positions find their source position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Dynamic time warping over token strings (the published method).
    Dtw,
    /// Equal byte spans of the normalized tokens; O(n + m).
    Offsets,
    /// Equal end bytes: the source distribution stored there predicts the token
    /// that starts where the target token ends; O(n + m).
    Boundary,
}

impl Choice for Method {
    const NAMES: &'static [(&'static str, Self)] =
        &[("dtw", Method::Dtw), ("offsets", Method::Offsets), ("boundary", Method::Boundary)];
}

/// How a matched position's candidates reach the target vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Candidates {
    /// One image per candidate ([`VocabAlign`]), logits kept, repeats dropped.
    Mined,
    /// The longest target token whose bytes start the candidate's bytes;
    /// probabilities of candidates with the same image are summed and written as
    /// log-probabilities.
    Prefix,
}

impl Choice for Candidates {
    const NAMES: &'static [(&'static str, Self)] = &[("mined", Candidates::Mined), ("prefix", Candidates::Prefix)];
}

/// What the source's top-k values are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Values {
    /// Raw logits: only their differences within a list mean anything.
    Logits,
    /// Log-probabilities under the model's full softmax (a calibrated teacher
    /// pass): a list's probabilities add up to its share of the mass.
    LogProbs,
}

impl Choice for Values {
    const NAMES: &'static [(&'static str, Self)] = &[("logits", Values::Logits), ("log_probs", Values::LogProbs)];
}

impl Choice for Family {
    const NAMES: &'static [(&'static str, Self)] =
        &[("byte_level", Family::ByteLevel), ("sentencepiece", Family::SentencePiece)];
}

/// One of the two vocabularies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Target,
}

impl Choice for Side {
    const NAMES: &'static [(&'static str, Self)] = &[("source", Side::Source), ("target", Side::Target)];
}

/// Options of [`crate::aligner::Aligner::align_batch`]; the default is the
/// published behaviour with next-token stand-ins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlignOptions {
    pub vocab_align: VocabAlign,
    pub onehot: OneHot,
    pub method: Method,
    pub candidates: Candidates,
    pub values: Values,
}

impl Default for AlignOptions {
    fn default() -> Self {
        AlignOptions {
            vocab_align: VocabAlign::Soft,
            onehot: OneHot::Next,
            method: Method::Dtw,
            candidates: Candidates::Mined,
            values: Values::Logits,
        }
    }
}

impl AlignOptions {
    /// What the output's values are: log-probabilities when the inputs are, or
    /// when prefix candidates merge them; the source logits otherwise.
    pub fn values_are(&self) -> Values {
        if self.values == Values::LogProbs || self.candidates == Candidates::Prefix {
            Values::LogProbs
        } else {
            Values::Logits
        }
    }

    /// What a one-hot stand-in writes for its token, probability 1: a logit of
    /// 1.0 beside logits, a log-probability of 0 beside log-probabilities.
    pub fn one_hot_value(&self) -> f32 {
        match self.values_are() {
            Values::Logits => 1.0,
            Values::LogProbs => 0.0,
        }
    }

    /// Whether the MinED map is needed: soft mode with `dtw` or `mined`
    /// candidates. (In soft mode a map already there is used all the same.)
    pub fn needs_vocab_map(&self) -> bool {
        self.vocab_align == VocabAlign::Soft && (self.method == Method::Dtw || self.candidates == Candidates::Mined)
    }
}

/// Options of [`crate::aligner::vocabularies::Vocabularies`]: how both
/// vocabularies are read and compared. The default is the published behaviour
/// with detected markers.
#[derive(Debug, Clone, Copy)]
pub struct VocabularyOptions<'a> {
    pub source_marker: Option<&'a str>,
    pub target_marker: Option<&'a str>,
    pub normalize: Normalize,
    /// `None`: told by the space marker.
    pub source_family: Option<Family>,
    pub target_family: Option<Family>,
    /// Ids that stand for no text (BOS, EOS, chat-template tokens).
    pub source_special_ids: &'a [u32],
    pub target_special_ids: &'a [u32],
    /// (source id, target id) of special tokens with the same role; both ends
    /// count as special.
    pub special_pairs: &'a [(u32, u32)],
}

impl Default for VocabularyOptions<'_> {
    fn default() -> Self {
        VocabularyOptions {
            source_marker: None,
            target_marker: None,
            normalize: Normalize::Marker,
            source_family: None,
            target_family: None,
            source_special_ids: &[],
            target_special_ids: &[],
            special_pairs: &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back() {
        assert_eq!(Method::from_name("boundary"), Some(Method::Boundary));
        assert_eq!(Method::from_name("Boundary"), None);
        assert_eq!(Family::ByteLevel.name(), "byte_level");
        assert_eq!(Values::LogProbs.name(), "log_probs");
    }

    #[test]
    fn outputs_are_log_probs_when_inputs_are_or_prefixes_merge_them() {
        let mined = AlignOptions::default();
        assert_eq!((mined.values_are(), mined.one_hot_value()), (Values::Logits, 1.0));
        let calibrated = AlignOptions { values: Values::LogProbs, ..mined };
        assert_eq!((calibrated.values_are(), calibrated.one_hot_value()), (Values::LogProbs, 0.0));
        let prefix = AlignOptions { candidates: Candidates::Prefix, ..mined };
        assert_eq!((prefix.values_are(), prefix.one_hot_value()), (Values::LogProbs, 0.0));
    }

    #[test]
    fn the_vocab_map_is_needed_in_soft_mode_by_dtw_or_mined_candidates() {
        let soft = AlignOptions::default();
        assert!(soft.needs_vocab_map());
        let linear = AlignOptions { method: Method::Offsets, candidates: Candidates::Prefix, ..soft };
        assert!(!linear.needs_vocab_map());
        assert!(AlignOptions { candidates: Candidates::Mined, ..linear }.needs_vocab_map());
        assert!(!AlignOptions { vocab_align: VocabAlign::Hard, ..soft }.needs_vocab_map());
    }
}
