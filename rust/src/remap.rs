//! Step 3 of FuseLLM: carry each source position's top-k distribution over to
//! the target position it is aligned with, in the target vocabulary; fill the
//! other positions with a one-hot stand-in. Batched over texts, in parallel.

use std::collections::HashMap;
use std::sync::OnceLock;

use rayon::prelude::*;

use crate::align::{dtw_align, DtwScratch, RemainingCost};
use crate::candidates::CandidateScratch;
use crate::error::{Error, Result};
use crate::normalize::{Family, NormalizedVocab};
use crate::parallel::run_with_workers;
use crate::token_cost::{StrippedVocab, TextCosts};
use crate::vocab::{
    check_marker, detect_marker, first_occurrences, text_length, Alphabet, SymbolTable, BYTE_LEVEL_MARKER,
};
use crate::vocab_map::{build_byte_vocab_map, build_vocab_map, VocabMap};

/// An integer type that token ids arrive in (numpy's int32 and int64).
pub trait TokenId: Copy + Into<i64> + PartialOrd + Sync {
    const ZERO: Self;
    /// `value`, or this type's bound nearest to it where it does not fit.
    fn saturating_from(value: i64) -> Self;
}

impl TokenId for i32 {
    const ZERO: i32 = 0;
    fn saturating_from(value: i64) -> i32 {
        value.clamp(i32::MIN.into(), i32::MAX.into()) as i32
    }
}

impl TokenId for i64 {
    const ZERO: i64 = 0;
    fn saturating_from(value: i64) -> i64 {
        value
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

/// Which target token a one-hot stand-in puts its mass on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OneHot {
    /// The next target token, as the stored distributions predict the next token;
    /// the last position gets no distribution.
    Next,
    /// The current target token (the published code's off-by-one behaviour).
    Current,
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

/// Options of [`Aligner::align_batch_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlignOptions {
    pub vocab_align: VocabAlign,
    pub onehot: OneHot,
    pub method: Method,
    pub candidates: Candidates,
}

impl AlignOptions {
    /// Whether the MinED map is needed: soft mode with `dtw` or `mined` candidates.
    fn needs_vocab_map(&self) -> bool {
        self.vocab_align == VocabAlign::Soft && (self.method == Method::Dtw || self.candidates == Candidates::Mined)
    }
}

/// Options of [`Aligner::with_options`]; the default is the published behaviour
/// with detected markers.
#[derive(Debug, Clone, Copy)]
pub struct AlignerOptions<'a> {
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

impl Default for AlignerOptions<'_> {
    fn default() -> Self {
        AlignerOptions {
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

/// Per-position outcome, as stored in [`AlignedOutput::status`].
pub mod status {
    /// Beyond the text's length.
    pub const PADDING: i8 = -1;
    /// No distribution at this position (the trainer falls back to the target's own).
    pub const EMPTY: i8 = 0;
    /// The aligned source position's distribution.
    pub const MATCHED: i8 = 1;
    /// A one-hot stand-in.
    pub const ONEHOT: i8 = 2;
}

/// Both vocabularies, prepared once for any number of batches.
pub struct Aligner {
    source_tokens: Vec<String>,
    target_tokens: Vec<String>,
    source_marker: String,
    target_marker: String,
    normalize: Normalize,
    source_bytes: NormalizedVocab,
    target_bytes: NormalizedVocab,
    special_pairs: Vec<(u32, u32)>,
    /// What the DTW cost and the match test compare.
    prepared: Prepared,
    vocab_map: OnceLock<VocabMap>,
    /// Per source id: the longest target image token whose bytes start the
    /// source token's bytes (a special token: its counterpart), or -1.
    prefix_map: OnceLock<Vec<i32>>,
    /// Marker-swapped source string -> a source id with that string; only needed
    /// for the first-token quirk of byte-level sources.
    swapped_lookup: OnceLock<HashMap<String, u32>>,
}

/// Counts over the positions of a batch.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct AlignCounts {
    pub positions: u64,
    pub matched: u64,
    pub onehot: u64,
    pub empty: u64,
    /// Matched positions whose source top-k had candidates that could not be
    /// mapped (hard mode) or were repeats of an earlier candidate's target id.
    pub dropped_candidates: u64,
    /// Texts aligned by DTW because `offsets` or `boundary` found that their two
    /// tokenizations spell different bytes.
    pub fallback_texts: u64,
    /// Sum over matched positions of the share of the source's top-k probability
    /// mass (softmax over the listed candidates) that reached the target vocabulary.
    pub kept_mass: f64,
}

impl AlignCounts {
    fn add(&mut self, other: &AlignCounts) {
        self.fallback_texts += other.fallback_texts;
        self.kept_mass += other.kept_mass;
        self.positions += other.positions;
        self.matched += other.matched;
        self.onehot += other.onehot;
        self.empty += other.empty;
        self.dropped_candidates += other.dropped_candidates;
    }
}

/// A batch of texts. Id sequences are addressed by start (in positions) and
/// length into flat buffers, so ragged batches (values plus offsets) and padded
/// ones (start = row * width) are read the same way without copying. Each
/// text's top-k lists are a `[rows, k]` row-major block of their own (at least
/// as many rows as the text has source tokens), so per-text arrays and the rows
/// of one padded array are both read where they lie.
pub struct BatchInput<'a, S, C> {
    pub target_ids: &'a [S],
    pub target_starts: &'a [usize],
    pub target_lengths: &'a [usize],
    pub source_ids: &'a [S],
    pub source_starts: &'a [usize],
    pub source_lengths: &'a [usize],
    /// Per text: row `i` holds the candidates of source position `i`.
    pub topk_ids: Vec<&'a [C]>,
    pub topk_logits: Vec<&'a [f32]>,
    pub k: usize,
}

/// The aligned batch: `[batch, max_length, k_out]` ids (-1 empty) and logits,
/// `[batch, max_length]` status and paired source positions (-1: none).
#[derive(Debug, Clone, PartialEq)]
pub struct AlignedOutput {
    pub ids: Vec<i32>,
    pub logits: Vec<f32>,
    pub status: Vec<i8>,
    pub source_positions: Vec<i32>,
    pub batch: usize,
    pub max_length: usize,
    pub k_out: usize,
    pub counts: AlignCounts,
}

impl Aligner {
    /// Prepares two vocabularies (token strings in id order). A marker of `None`
    /// is detected from the vocabulary.
    pub fn new(
        source_tokens: Vec<String>,
        target_tokens: Vec<String>,
        source_marker: Option<&str>,
        target_marker: Option<&str>,
    ) -> Result<Self> {
        let options = AlignerOptions { source_marker, target_marker, ..AlignerOptions::default() };
        Self::with_options(source_tokens, target_tokens, &options)
    }

    /// Prepares two vocabularies with every option.
    pub fn with_options(
        source_tokens: Vec<String>,
        target_tokens: Vec<String>,
        options: &AlignerOptions<'_>,
    ) -> Result<Self> {
        if source_tokens.is_empty() {
            return Err(Error::invalid("source_tokens", "the source vocabulary is empty"));
        }
        if target_tokens.is_empty() {
            return Err(Error::invalid("target_tokens", "the target vocabulary is empty"));
        }
        let resolve = |marker: Option<&str>, tokens: &[String], arg: &'static str| -> Result<String> {
            let marker = match marker {
                Some(m) => m,
                None => detect_marker(tokens, arg)?,
            };
            check_marker(marker, arg)?;
            Ok(marker.to_string())
        };
        let source_marker = resolve(options.source_marker, &source_tokens, "source_marker")?;
        let target_marker = resolve(options.target_marker, &target_tokens, "target_marker")?;

        for &(s, t) in options.special_pairs {
            if s as usize >= source_tokens.len() || t as usize >= target_tokens.len() {
                return Err(Error::invalid(
                    "special_token_map",
                    format!("pair ({s}, {t}) is outside the vocabularies ({}, {})", source_tokens.len(), target_tokens.len()),
                ));
            }
        }
        let specials = |ids: &[u32], paired: fn(&(u32, u32)) -> u32| -> Vec<u32> {
            ids.iter().copied().chain(options.special_pairs.iter().map(paired)).collect()
        };
        let source_family = options.source_family.unwrap_or(Family::of_marker(&source_marker));
        let target_family = options.target_family.unwrap_or(Family::of_marker(&target_marker));
        let source_bytes = NormalizedVocab::new(
            &source_tokens,
            source_family,
            &specials(options.source_special_ids, |p| p.0),
            "source_special_ids",
        )?;
        let target_bytes = NormalizedVocab::new(
            &target_tokens,
            target_family,
            &specials(options.target_special_ids, |p| p.1),
            "target_special_ids",
        )?;

        let prepared = match options.normalize {
            Normalize::Marker => Prepared::by_marker(&source_tokens, &target_tokens, &source_marker, &target_marker),
            Normalize::Bytes => Prepared::by_bytes(&source_bytes, &target_bytes, options.special_pairs),
        };
        Ok(Aligner {
            source_tokens,
            target_tokens,
            source_marker,
            target_marker,
            normalize: options.normalize,
            source_bytes,
            target_bytes,
            special_pairs: options.special_pairs.to_vec(),
            prepared,
            vocab_map: OnceLock::new(),
            prefix_map: OnceLock::new(),
            swapped_lookup: OnceLock::new(),
        })
    }
}

/// What the DTW cost and the match test compare, for one [`Normalize`] mode.
struct Prepared {
    /// Per source id: the lowest target id whose string equals the source string
    /// with its marker swapped (bytes: with the same bytes; a special token: its
    /// counterpart by role), or -1.
    swapped_exact: Vec<i32>,
    /// Per target id: the lowest target id with the same string (bytes: the same
    /// bytes; a special token is its own class).
    target_class: Vec<u32>,
    /// Marker-free strings of both vocabularies, in one alphabet, with shared
    /// equality classes so that equal strings cost nothing to compare.
    source_stripped: SymbolTable,
    target_stripped: SymbolTable,
    source_stripped_class: Vec<u32>,
    target_stripped_class: Vec<u32>,
    stripped_classes: usize,
    alphabet_size: usize,
    /// Bytes of text each token stands for, to guide the DTW search.
    source_text_len: Vec<u32>,
    target_text_len: Vec<u32>,
}

/// Class ids shared by two sides: equal keys get equal ids.
fn shared_classes<K: std::hash::Hash + Eq>(
    source: impl Iterator<Item = K>,
    target: impl Iterator<Item = K>,
) -> (Vec<u32>, Vec<u32>, usize) {
    let mut classes: HashMap<K, u32> = HashMap::new();
    let mut class_of = |key: K| {
        let next = classes.len() as u32;
        *classes.entry(key).or_insert(next)
    };
    let source: Vec<u32> = source.map(&mut class_of).collect();
    let target: Vec<u32> = target.map(&mut class_of).collect();
    (source, target, classes.len())
}

impl Prepared {
    fn by_marker(source_tokens: &[String], target_tokens: &[String], source_marker: &str, target_marker: &str) -> Self {
        let (target_class, first_target) = first_occurrences(target_tokens);
        let swapped_exact = source_tokens
            .iter()
            .map(|s| first_target.get(s.replace(source_marker, target_marker).as_str()).map_or(-1, |&t| t as i32))
            .collect();
        let source_plain: Vec<String> = source_tokens.iter().map(|s| s.replace(source_marker, "")).collect();
        let target_plain: Vec<String> = target_tokens.iter().map(|s| s.replace(target_marker, "")).collect();
        let (source_stripped_class, target_stripped_class, stripped_classes) =
            shared_classes(source_plain.iter().map(String::as_str), target_plain.iter().map(String::as_str));
        let mut alphabet = Alphabet::default();
        let source_stripped = SymbolTable::encode(&source_plain, &mut alphabet);
        let target_stripped = SymbolTable::encode(&target_plain, &mut alphabet);
        Prepared {
            swapped_exact,
            target_class,
            source_stripped,
            target_stripped,
            source_stripped_class,
            target_stripped_class,
            stripped_classes,
            alphabet_size: alphabet.len(),
            source_text_len: source_tokens.iter().map(|t| text_length(t, source_marker)).collect(),
            target_text_len: target_tokens.iter().map(|t| text_length(t, target_marker)).collect(),
        }
    }

    fn by_bytes(source: &NormalizedVocab, target: &NormalizedVocab, special_pairs: &[(u32, u32)]) -> Self {
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
        let swapped_exact = (0..source.len())
            .map(|id| match source.is_special(id) {
                true => paired.get(&(id as u32)).map_or(-1, |&t| t as i32),
                false => first_target.get(source.get(id)).map_or(-1, |&t| t as i32),
            })
            .collect();
        let (source_stripped_class, target_stripped_class, stripped_classes) =
            shared_classes((0..source.len()).map(|id| source.get(id)), (0..target.len()).map(|id| target.get(id)));
        let symbols = |vocab: &NormalizedVocab| {
            SymbolTable::from_sequences((0..vocab.len()).map(|id| vocab.get(id).iter().map(|&b| u32::from(b))))
        };
        let lengths = |vocab: &NormalizedVocab| (0..vocab.len()).map(|id| vocab.byte_len(id)).collect();
        Prepared {
            swapped_exact,
            target_class,
            source_stripped: symbols(source),
            target_stripped: symbols(target),
            source_stripped_class,
            target_stripped_class,
            stripped_classes,
            alphabet_size: 256,
            source_text_len: lengths(source),
            target_text_len: lengths(target),
        }
    }
}

impl Aligner {
    pub fn source_marker(&self) -> &str {
        &self.source_marker
    }

    pub fn target_marker(&self) -> &str {
        &self.target_marker
    }

    pub fn source_size(&self) -> usize {
        self.source_tokens.len()
    }

    pub fn target_size(&self) -> usize {
        self.target_tokens.len()
    }

    /// The MinED map, if built or given.
    pub fn vocab_map(&self) -> Option<&VocabMap> {
        self.vocab_map.get()
    }

    /// Uses a map built elsewhere (checked against the vocabulary sizes).
    pub fn set_vocab_map(&self, map: VocabMap) -> Result<()> {
        check_vocab_map(&map, self.source_size(), self.target_size())?;
        // A map set concurrently by another caller is the same map.
        let _ = self.vocab_map.set(map);
        Ok(())
    }

    /// Builds the MinED map unless present. Runs on the current rayon pool.
    pub fn ensure_vocab_map(&self) -> Result<&VocabMap> {
        if let Some(map) = self.vocab_map.get() {
            return Ok(map);
        }
        let map = match self.normalize {
            Normalize::Marker => {
                build_vocab_map(&self.source_tokens, &self.target_tokens, &self.source_marker, &self.target_marker)?
            }
            Normalize::Bytes => build_byte_vocab_map(
                &self.source_bytes,
                &self.target_bytes,
                &self.source_tokens,
                &self.target_tokens,
                &self.special_pairs,
            )?,
        };
        Ok(self.vocab_map.get_or_init(|| map))
    }

    pub fn normalize(&self) -> Normalize {
        self.normalize
    }

    /// The bytes of every source token.
    pub fn source_bytes(&self) -> &NormalizedVocab {
        &self.source_bytes
    }

    /// The bytes of every target token.
    pub fn target_bytes(&self) -> &NormalizedVocab {
        &self.target_bytes
    }

    /// The byte-prefix image of every source id (-1: none); built on first use,
    /// on the current rayon pool.
    pub fn prefix_map(&self) -> &[i32] {
        self.prefix_map.get_or_init(|| {
            let target = &self.target_bytes;
            let mut by_bytes: HashMap<&[u8], u32> = HashMap::with_capacity(target.len());
            let mut longest = 0usize;
            for id in (0..target.len()).filter(|&id| target.is_image(id) && target.byte_len(id) > 0) {
                by_bytes.entry(target.get(id)).or_insert(id as u32);
                longest = longest.max(target.byte_len(id) as usize);
            }
            let paired: HashMap<u32, u32> = self.special_pairs.iter().copied().collect();
            let source = &self.source_bytes;
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
        })
    }

    fn stripped_vocab(&self) -> StrippedVocab<'_> {
        StrippedVocab {
            source: &self.prepared.source_stripped,
            target: &self.prepared.target_stripped,
            source_text_len: &self.prepared.source_text_len,
            target_text_len: &self.prepared.target_text_len,
            source_class: &self.prepared.source_stripped_class,
            target_class: &self.prepared.target_stripped_class,
            classes: self.prepared.stripped_classes,
            alphabet: self.prepared.alphabet_size,
        }
    }

    fn swapped_lookup(&self) -> &HashMap<String, u32> {
        self.swapped_lookup.get_or_init(|| {
            let mut lookup = HashMap::with_capacity(self.source_tokens.len());
            for (k, s) in self.source_tokens.iter().enumerate() {
                lookup.entry(s.replace(&self.source_marker, &self.target_marker)).or_insert(k as u32);
            }
            lookup
        })
    }

    /// Whether source position `source_id` aligned alone to target position `j`
    /// (token `target_id`) counts as matched.
    fn position_matches(&self, j: usize, source_id: usize, target_id: usize, map: Option<&VocabMap>) -> bool {
        let t_class = self.prepared.target_class[target_id] as i32;
        let target = &self.target_tokens[target_id];
        // Quirk of the published code for byte-level sources: a first target token
        // that starts with a space marker gets one prepended to the source token.
        if self.normalize == Normalize::Marker && self.source_marker == BYTE_LEVEL_MARKER && j == 0 && target.starts_with(&self.target_marker) {
            let swapped = self.source_tokens[source_id].replace(&self.source_marker, &self.target_marker);
            if !swapped.starts_with(&self.target_marker) {
                let prefixed = format!("{}{}", self.target_marker, swapped);
                return prefixed == *target
                    || map.is_some_and(|map| {
                        self.swapped_lookup()
                            .get(&prefixed)
                            .is_some_and(|&k| self.prepared.target_class[map.target_ids[k as usize] as usize] as i32 == t_class)
                    });
            }
        }
        self.prepared.swapped_exact[source_id] == t_class
            || map.is_some_and(|map| self.prepared.target_class[map.target_ids[source_id] as usize] as i32 == t_class)
    }
}

fn check_vocab_map(map: &VocabMap, source_size: usize, target_size: usize) -> Result<()> {
    let err = |msg: String| Err(Error::CorruptVocabMap(msg));
    if map.target_ids.len() != source_size || map.distances.len() != source_size {
        return err(format!(
            "vocab_map: it covers {} source tokens but the source vocabulary has {source_size}",
            map.target_ids.len()
        ));
    }
    if let Some(k) = map.target_ids.iter().position(|&t| t < 0 || t as usize >= target_size) {
        return err(format!(
            "vocab_map: source id {k} maps to {} outside the target vocabulary (size {target_size})",
            map.target_ids[k]
        ));
    }
    if let Some(k) = map.distances.iter().position(|&d| d < 0) {
        return err(format!("vocab_map: source id {k} has a negative distance"));
    }
    Ok(())
}

fn split_per_text<T>(buffer: &mut [T], stride: usize, batch: usize) -> Vec<&mut [T]> {
    if stride == 0 {
        (0..batch).map(|_| <&mut [T]>::default()).collect()
    } else {
        buffer.chunks_mut(stride).collect()
    }
}

/// Per-thread scratch space.
#[derive(Default)]
struct Scratch {
    costs: TextCosts,
    dtw: DtwScratch,
    source: Vec<usize>,
    target: Vec<usize>,
    /// Per target position, the matched source position or [`UNMATCHED`].
    pairs: Vec<u32>,
    source_text: Vec<u8>,
    target_text: Vec<u8>,
    source_ends: Vec<u32>,
    target_ends: Vec<u32>,
    /// Per source position: whether a target position takes its distribution.
    rows_used: Vec<bool>,
    candidates: CandidateScratch,
}

const UNMATCHED: u32 = u32::MAX;

/// Where two spellings of a text agree: equal bytes, or one side with one
/// extra leading space (SentencePiece's dummy prefix), which is then taken off
/// its ends. `false` when the texts differ otherwise.
fn reconcile(source: &[u8], target: &[u8], source_ends: &mut [u32], target_ends: &mut [u32]) -> bool {
    let one_space_more = |longer: &[u8], shorter: &[u8]| longer.first() == Some(&b' ') && &longer[1..] == shorter;
    if source == target {
        return true;
    }
    let shifted = if one_space_more(source, target) {
        source_ends
    } else if one_space_more(target, source) {
        target_ends
    } else {
        return false;
    };
    for end in shifted {
        *end = end.saturating_sub(1);
    }
    true
}

/// Pairs each target token with the source token ending at the same byte (and,
/// for `offsets`, starting there too); empty tokens are never paired. Ends are
/// non-decreasing and a non-empty token ends after every earlier one, so one
/// forward walk over both sides finds every pair.
fn pair_by_bytes(source_ends: &[u32], target_ends: &[u32], same_start: bool, pairs: &mut Vec<u32>) {
    pairs.clear();
    let start = |ends: &[u32], k: usize| if k == 0 { 0 } else { ends[k - 1] };
    let mut i = 0usize;
    for (j, &end) in target_ends.iter().enumerate() {
        let target_start = start(target_ends, j);
        let mut pair = UNMATCHED;
        if end > target_start {
            while i < source_ends.len() && source_ends[i] < end {
                i += 1;
            }
            let ending_here = source_ends[i..].iter().take_while(|&&e| e == end).count();
            if let Some(k) = (i..i + ending_here).find(|&k| start(source_ends, k) < end) {
                if !same_start || start(source_ends, k) == target_start {
                    pair = k as u32;
                }
            }
        }
        pairs.push(pair);
    }
}

fn read_ids<S: TokenId>(
    values: &[S],
    vocab_size: usize,
    arg: &'static str,
    text: usize,
    out: &mut Vec<usize>,
) -> Result<()> {
    out.clear();
    // A negative id wraps to a value above every vocabulary size.
    out.extend(values.iter().map(|&v| Into::<i64>::into(v) as u64 as usize));
    if out.iter().fold(false, |bad, &v| bad | (v >= vocab_size)) {
        let pos = out.iter().position(|&v| v >= vocab_size).expect("found above");
        let v = out[pos] as i64;
        return Err(Error::invalid(
            arg,
            format!("text {text}, position {pos}: id {v} is outside the vocabulary (size {vocab_size})"),
        ));
    }
    Ok(())
}

struct TextOutput<'a> {
    ids: &'a mut [i32],
    logits: &'a mut [f32],
    status: &'a mut [i8],
    source_positions: &'a mut [i32],
}

impl Aligner {
    #[allow(clippy::too_many_arguments)]
    fn align_text<S: TokenId, C: TokenId>(
        &self,
        b: usize,
        input: &BatchInput<'_, S, C>,
        options: &AlignOptions,
        map: Option<&VocabMap>,
        scratch: &mut Scratch,
        out: TextOutput<'_>,
        k_out: usize,
    ) -> Result<AlignCounts> {
        let (ts, tl) = (input.target_starts[b], input.target_lengths[b]);
        let (ss, sl) = (input.source_starts[b], input.source_lengths[b]);
        read_ids(&input.target_ids[ts..ts + tl], self.target_size(), "target_ids", b, &mut scratch.target)?;
        read_ids(&input.source_ids[ss..ss + sl], self.source_size(), "source_ids", b, &mut scratch.source)?;
        let k = input.k;
        let (topk_ids, topk_logits) = (&input.topk_ids[b][..sl * k], &input.topk_logits[b][..sl * k]);
        // Compared in the ids' own type, which vectorizes where 64-bit
        // comparisons of widened 32-bit ids would not.
        let largest = C::saturating_from(self.source_size() as i64 - 1);
        let bad = |(&c, &logit): (&C, &f32)| (c > largest) | ((c >= C::ZERO) & !logit.is_finite());
        // One pass without early exit (it vectorizes); the culprit is looked for
        // only when there is one.
        let any_bad = topk_ids.iter().zip(topk_logits).fold(false, |acc, slot| acc | bad(slot));
        if any_bad {
            let slot = topk_ids.iter().zip(topk_logits).position(bad).expect("found above");
            let (c, logit) = (topk_ids[slot], topk_logits[slot]);
            let position = slot / k.max(1);
            return Err(if c > largest {
                let c: i64 = c.into();
                Error::invalid(
                    "source_topk_ids",
                    format!(
                        "text {b}, position {position}: id {c} is outside the source vocabulary (size {})",
                        self.source_size()
                    ),
                )
            } else {
                Error::invalid("source_topk_logits", format!("text {b}, position {position}: logit {logit} is not finite"))
            });
        }

        let mut counts = AlignCounts { positions: tl as u64, ..AlignCounts::default() };
        let by_bytes = options.method != Method::Dtw && {
            self.source_bytes.concatenate(&scratch.source, &mut scratch.source_text, &mut scratch.source_ends);
            self.target_bytes.concatenate(&scratch.target, &mut scratch.target_text, &mut scratch.target_ends);
            reconcile(&scratch.source_text, &scratch.target_text, &mut scratch.source_ends, &mut scratch.target_ends)
        };
        if by_bytes {
            let same_start = options.method == Method::Offsets;
            pair_by_bytes(&scratch.source_ends, &scratch.target_ends, same_start, &mut scratch.pairs);
        } else {
            counts.fallback_texts = u64::from(options.method != Method::Dtw);
            self.pair_by_dtw(options.vocab_align, map, scratch);
        }

        let prefix = options.candidates == Candidates::Prefix;
        // Where each candidate's image is read.
        let images: &[i32] = match (options.vocab_align, map) {
            _ if prefix => self.prefix_map(),
            (VocabAlign::Soft, Some(map)) => &map.target_ids,
            _ => &self.prepared.swapped_exact,
        };
        scratch.rows_used.clear();
        scratch.rows_used.resize(sl, false);
        for &pair in scratch.pairs.iter().filter(|&&pair| pair != UNMATCHED) {
            scratch.rows_used[pair as usize] = true;
        }
        scratch.candidates.prepare_rows(topk_ids, topk_logits, k, |c| images[c], &scratch.rows_used, prefix);
        let target = &scratch.target;
        for (j, &pair) in scratch.pairs.iter().enumerate() {
            let ids = &mut out.ids[j * k_out..(j + 1) * k_out];
            let logits = &mut out.logits[j * k_out..(j + 1) * k_out];
            if pair != UNMATCHED {
                out.source_positions[j] = pair as i32;
                let i = pair as usize;
                let row = &topk_ids[i * k..(i + 1) * k];
                let row_logits = &topk_logits[i * k..(i + 1) * k];
                let written = if prefix {
                    scratch.candidates.merge_by_image(i, row_logits, ids, logits)
                } else {
                    scratch.candidates.first_image_only(i, row, row_logits, ids, logits)
                };
                counts.dropped_candidates += u64::from(written.dropped);
                if written.len == 0 {
                    out.status[j] = status::EMPTY;
                    counts.empty += 1;
                } else {
                    out.status[j] = status::MATCHED;
                    counts.matched += 1;
                    counts.kept_mass += f64::from(written.kept_mass);
                }
                continue;
            }
            let stand_in = match options.onehot {
                OneHot::Current => Some(target[j]),
                OneHot::Next => target.get(j + 1).copied(),
            };
            match stand_in {
                Some(t) => {
                    ids[0] = t as i32;
                    // Probability 1: a logit of 1.0 or a log-probability of 0.
                    logits[0] = if prefix { 0.0 } else { 1.0 };
                    out.status[j] = status::ONEHOT;
                    counts.onehot += 1;
                }
                None => {
                    out.status[j] = status::EMPTY;
                    counts.empty += 1;
                }
            }
        }
        Ok(counts)
    }

    /// Pairs target positions by DTW: a target position aligned to exactly one
    /// source position whose token matches it.
    fn pair_by_dtw(&self, vocab_align: VocabAlign, map: Option<&VocabMap>, scratch: &mut Scratch) {
        scratch.costs.load(&self.stripped_vocab(), &scratch.source, &scratch.target);
        let c = &mut scratch.costs;
        let (source_ends, target_ends) = (std::mem::take(&mut c.source_ends), std::mem::take(&mut c.target_ends));
        let (rows_after, cols_after) = (std::mem::take(&mut c.rows_after), std::mem::take(&mut c.cols_after));
        let remaining = RemainingCost { rows_after: &rows_after, cols_after: &cols_after };
        let spans = dtw_align(&source_ends, &target_ends, &remaining, &mut c.costs(), &mut scratch.dtw);
        (c.source_ends, c.target_ends, c.rows_after, c.cols_after) = (source_ends, target_ends, rows_after, cols_after);

        let map = (vocab_align == VocabAlign::Soft).then_some(map).flatten();
        scratch.pairs.clear();
        for (j, span) in spans.iter().enumerate() {
            let matched = match span {
                Some((first, last)) if first == last => {
                    let i = *first as usize;
                    self.position_matches(j, scratch.source[i], scratch.target[j], map).then_some(i as u32)
                }
                _ => None,
            };
            scratch.pairs.push(matched.unwrap_or(UNMATCHED));
        }
    }

    /// Aligns a batch. Runs on the current rayon pool; builds the MinED map first
    /// when `vocab_align` is soft and no map is present.
    pub fn align_batch<S, C>(
        &self,
        input: &BatchInput<'_, S, C>,
        vocab_align: VocabAlign,
        onehot: OneHot,
    ) -> Result<AlignedOutput>
    where
        S: TokenId,
        C: TokenId,
    {
        let options = AlignOptions { vocab_align, onehot, method: Method::Dtw, candidates: Candidates::Mined };
        self.align_batch_with(input, &options)
    }

    /// Aligns a batch with any method and candidate mapping, texts in parallel
    /// on the current rayon pool. The MinED map is built first when
    /// `vocab_align` is soft, no map is present and the method or the
    /// candidates use it (`dtw`, `mined`); a text that `offsets` or `boundary`
    /// hand to DTW then matches tokens by equality only.
    pub fn align_batch_with<S, C>(&self, input: &BatchInput<'_, S, C>, options: &AlignOptions) -> Result<AlignedOutput>
    where
        S: TokenId,
        C: TokenId,
    {
        self.align_texts(input, options, false)
    }

    /// [`Aligner::align_batch_with`] on the calling thread alone, without a
    /// thread pool (the maps it needs are built first, on one thread).
    pub fn align_batch_serial<S, C>(&self, input: &BatchInput<'_, S, C>, options: &AlignOptions) -> Result<AlignedOutput>
    where
        S: TokenId,
        C: TokenId,
    {
        let needs_map = options.needs_vocab_map() && self.vocab_map().is_none();
        let needs_prefix = options.candidates == Candidates::Prefix && self.prefix_map.get().is_none();
        if needs_map || needs_prefix {
            // The maps are built with parallel iterators: on a pool of one thread.
            run_with_workers(1, || self.align_texts(input, options, true)).and_then(|r| r)
        } else {
            self.align_texts(input, options, true)
        }
    }

    fn align_texts<S, C>(&self, input: &BatchInput<'_, S, C>, options: &AlignOptions, serial: bool) -> Result<AlignedOutput>
    where
        S: TokenId,
        C: TokenId,
    {
        let batch = input.target_starts.len();
        for (name, len) in [
            ("target_lengths", input.target_lengths.len()),
            ("source_ids", input.source_starts.len()),
            ("source_lengths", input.source_lengths.len()),
            ("source_topk_ids", input.topk_ids.len()),
            ("source_topk_logits", input.topk_logits.len()),
        ] {
            if len != batch {
                return Err(Error::invalid(name, format!("has {len} texts but target_ids has {batch}")));
            }
        }
        for b in 0..batch {
            if input.topk_ids[b].len() != input.topk_logits[b].len() {
                return Err(Error::invalid("source_topk_logits", format!("text {b}: shape differs from source_topk_ids")));
            }
            let bounds = [
                ("target_ids", input.target_starts[b] + input.target_lengths[b], input.target_ids.len()),
                ("source_ids", input.source_starts[b] + input.source_lengths[b], input.source_ids.len()),
                ("source_topk_ids", input.source_lengths[b] * input.k, input.topk_ids[b].len()),
            ];
            for (name, end, len) in bounds {
                if end > len {
                    return Err(Error::invalid(name, format!("text {b} reaches past the end of the array")));
                }
            }
        }
        let map = match options.vocab_align {
            VocabAlign::Soft if options.needs_vocab_map() => Some(self.ensure_vocab_map()?),
            VocabAlign::Soft => self.vocab_map(),
            VocabAlign::Hard => None,
        };
        if options.candidates == Candidates::Prefix {
            self.prefix_map();
        }
        let max_length = input.target_lengths.iter().copied().max().unwrap_or(0);
        let k_out = input.k.max(1);
        let mut ids = vec![-1i32; batch * max_length * k_out];
        let mut logits = vec![0f32; batch * max_length * k_out];
        let mut status = vec![status::PADDING; batch * max_length];
        let mut source_positions = vec![-1i32; batch * max_length];
        // One output slice per text, also when every text is empty, so that
        // every text's input is still checked.
        let text_stride = max_length * k_out;
        let id_chunks: Vec<&mut [i32]> = split_per_text(&mut ids, text_stride, batch);
        let logit_chunks: Vec<&mut [f32]> = split_per_text(&mut logits, text_stride, batch);
        let status_chunks: Vec<&mut [i8]> = split_per_text(&mut status, max_length, batch);
        let position_chunks: Vec<&mut [i32]> = split_per_text(&mut source_positions, max_length, batch);
        let text = |scratch: &mut Scratch, (b, (((ids, logits), status), source_positions))| {
            let out = TextOutput { ids, logits, status, source_positions };
            self.align_text(b, input, options, map, scratch, out, k_out)
        };
        let chunks = id_chunks.into_iter().zip(logit_chunks).zip(status_chunks).zip(position_chunks);
        let results: Vec<Result<AlignCounts>> = if serial {
            let mut scratch = Scratch::default();
            chunks.enumerate().map(|t| text(&mut scratch, t)).collect()
        } else {
            let chunks: Vec<_> = chunks.collect();
            chunks.into_par_iter().enumerate().map_init(Scratch::default, text).collect()
        };
        let mut counts = AlignCounts::default();
        for r in results {
            counts.add(&r?);
        }
        Ok(AlignedOutput { ids, logits, status, source_positions, batch, max_length, k_out, counts })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// One text: target `▁the ▁cat` (ids 0, 1), source `Ġthe Ġc at` (ids 0, 2, 3).
    fn run(vocab_align: VocabAlign, onehot: OneHot) -> AlignedOutput {
        let aligner = Aligner::new(
            strings(&["Ġthe", "Ġcat", "Ġc", "at"]),
            strings(&["▁the", "▁cat", "▁dog"]),
            None,
            None,
        )
        .unwrap();
        let topk_ids: [i64; 6] = [1, 0, 3, -1, 0, 1];
        let topk_logits = [2.0, 1.0, 0.5, f32::NAN, 0.25, 0.125];
        let input = BatchInput {
            target_ids: &[0i64, 1],
            target_starts: &[0],
            target_lengths: &[2],
            source_ids: &[0i64, 2, 3],
            source_starts: &[0],
            source_lengths: &[3],
            topk_ids: vec![&topk_ids],
            topk_logits: vec![&topk_logits],
            k: 2,
        };
        aligner.align_batch(&input, vocab_align, onehot).unwrap()
    }

    #[test]
    fn matched_position_and_one_hot_stand_ins() {
        // DTW pairs ▁the with Ġthe alone (matched); ▁cat gets both Ġc and at, so
        // it takes a stand-in: itself ("current") or nothing, being last ("next").
        let out = run(VocabAlign::Hard, OneHot::Current);
        assert_eq!(out.ids, vec![1, 0, 1, -1]);
        assert_eq!(out.logits[..3], [2.0, 1.0, 1.0]);
        assert_eq!(out.status, vec![status::MATCHED, status::ONEHOT]);
        let out = run(VocabAlign::Hard, OneHot::Next);
        assert_eq!(out.ids, vec![1, 0, -1, -1]);
        assert_eq!(out.status, vec![status::MATCHED, status::EMPTY]);
        let c = out.counts;
        assert_eq!((c.positions, c.matched, c.onehot, c.empty, c.dropped_candidates), (2, 1, 0, 1, 0));
        assert_eq!((c.fallback_texts, c.kept_mass), (0, 1.0));
    }

    #[test]
    fn soft_mode_maps_every_candidate() {
        let out = run(VocabAlign::Soft, OneHot::Next);
        assert_eq!(out.ids[..2], [1, 0]);
        assert_eq!(out.status[0], status::MATCHED);
    }

    #[test]
    fn out_of_range_ids_name_the_argument() {
        let aligner = Aligner::new(strings(&["Ġa"]), strings(&["▁a"]), None, None).unwrap();
        let input = BatchInput {
            target_ids: &[0i64, 5],
            target_starts: &[0],
            target_lengths: &[2],
            source_ids: &[0i64],
            source_starts: &[0],
            source_lengths: &[1],
            topk_ids: vec![&[0i64]],
            topk_logits: vec![&[0.0]],
            k: 1,
        };
        let err = aligner.align_batch(&input, VocabAlign::Hard, OneHot::Next).unwrap_err();
        assert_eq!(err.to_string(), "target_ids: text 0, position 1: id 5 is outside the vocabulary (size 1)");
    }

    /// Aligns one text (source marker `Ġ`, target `▁`) with every source
    /// position's top-1 candidate being source id `candidate`, so a position's
    /// status shows whether it was paired.
    fn by_bytes(source: &[&str], target: &[&str], source_text: &[i64], target_text: &[i64], candidate: i64,
                method: Method, candidates: Candidates) -> AlignedOutput {
        let aligner = Aligner::new(strings(source), strings(target), Some("Ġ"), Some("▁")).unwrap();
        let topk_ids = vec![candidate; source_text.len()];
        let logits = vec![0.0f32; source_text.len()];
        let input = BatchInput {
            target_ids: target_text,
            target_starts: &[0],
            target_lengths: &[target_text.len()],
            source_ids: source_text,
            source_starts: &[0],
            source_lengths: &[source_text.len()],
            topk_ids: vec![&topk_ids],
            topk_logits: vec![&logits],
            k: 1,
        };
        let options = AlignOptions { vocab_align: VocabAlign::Hard, onehot: OneHot::Next, method, candidates };
        let out = aligner.align_batch_with(&input, &options).unwrap();
        assert_eq!(aligner.align_batch_serial(&input, &options).unwrap(), out, "serial and pooled runs differ");
        out
    }

    const M: i8 = status::MATCHED;
    const O: i8 = status::ONEHOT;
    const E: i8 = status::EMPTY;

    #[test]
    fn a_word_split_differently() {
        // " un|believ|able" ends at bytes 3, 9, 13; " unbel|iev|able" at 6, 9, 13.
        let (source, target) = (["Ġun", "believ", "able"], ["▁unbel", "iev", "able", "▁un"]);
        let out = by_bytes(&source, &target, &[0, 1, 2], &[0, 1, 2], 0, Method::Boundary, Candidates::Mined);
        assert_eq!(out.status, vec![O, M, M]);
        assert_eq!(out.ids, vec![1, 3, 3]);
        // Offsets also needs equal starts: only "able" qualifies.
        let out = by_bytes(&source, &target, &[0, 1, 2], &[0, 1, 2], 0, Method::Offsets, Candidates::Mined);
        assert_eq!(out.status, vec![O, O, M]);
        assert_eq!(out.counts.fallback_texts, 0);
    }

    #[test]
    fn a_character_split_across_byte_level_tokens() {
        // "é" is C3 A9: two byte tokens on the source side, one token on the target side.
        let (source, target) = (["Ġcaf", "Ã", "©"], ["▁caf", "é", "▁café"]);
        let out = by_bytes(&source, &target, &[0, 1, 2], &[0, 1], 0, Method::Boundary, Candidates::Mined);
        assert_eq!(out.status, vec![M, M]);
        let out = by_bytes(&source, &target, &[0, 1, 2], &[0, 1], 0, Method::Offsets, Candidates::Mined);
        assert_eq!(out.status, vec![M, E]);
        let out = by_bytes(&source, &target, &[0, 1, 2], &[2], 0, Method::Boundary, Candidates::Mined);
        assert_eq!(out.status, vec![M]);
    }

    #[test]
    fn leading_spaces_in_both_conventions() {
        // The SentencePiece side has a space in front of the text, the
        // byte-level side none: the spaced side is shifted by one byte.
        let (source, target) = (["Hello", "Ġworld"], ["▁Hello", "▁world"]);
        let out = by_bytes(&source, &target, &[0, 1], &[0, 1], 1, Method::Offsets, Candidates::Prefix);
        assert_eq!(out.status, vec![M, M]);
        assert_eq!(out.ids, vec![1, 1]);
        assert_eq!(out.logits, vec![0.0, 0.0]);
        assert_eq!(out.counts.fallback_texts, 0);
        // Texts that differ otherwise fall back to DTW.
        let out = by_bytes(&source, &target, &[0, 1], &[1], 1, Method::Offsets, Candidates::Prefix);
        assert_eq!(out.counts.fallback_texts, 1);
    }

    #[test]
    fn special_tokens_are_never_matched() {
        let source = ["<s>", "Ġa"];
        let target = ["<s>", "▁a"];
        let aligner = Aligner::with_options(
            strings(&source),
            strings(&target),
            &AlignerOptions { source_special_ids: &[0], special_pairs: &[(0, 0)], ..AlignerOptions::default() },
        )
        .unwrap();
        assert_eq!(aligner.prefix_map(), &[0, 1]);
        let input = BatchInput {
            target_ids: &[0i64, 1],
            target_starts: &[0],
            target_lengths: &[2],
            source_ids: &[0i64, 1],
            source_starts: &[0],
            source_lengths: &[2],
            topk_ids: vec![&[1i64, 1]],
            topk_logits: vec![&[0.0, 0.0]],
            k: 1,
        };
        let options = AlignOptions {
            vocab_align: VocabAlign::Hard,
            onehot: OneHot::Next,
            method: Method::Boundary,
            candidates: Candidates::Prefix,
        };
        let out = aligner.align_batch_with(&input, &options).unwrap();
        assert_eq!(out.status, vec![O, M]);
    }

    #[test]
    fn identical_tokenizers_keep_every_distribution() {
        let vocab = strings(&["Ġthe", "Ġcat", "Ġc", "at", "Ã", "©"]);
        let aligner = Aligner::new(vocab.clone(), vocab, None, None).unwrap();
        let text = [0i64, 2, 3, 4, 5, 1];
        let topk_ids: Vec<i64> = text.iter().flat_map(|&t| [t, (t + 1) % 6, (t + 2) % 6]).collect();
        let topk_logits: Vec<f32> = (0..topk_ids.len()).map(|x| (x % 3) as f32 * -0.7).collect();
        let input = BatchInput {
            target_ids: &text,
            target_starts: &[0],
            target_lengths: &[6],
            source_ids: &text,
            source_starts: &[0],
            source_lengths: &[6],
            topk_ids: vec![&topk_ids],
            topk_logits: vec![&topk_logits],
            k: 3,
        };
        for method in [Method::Offsets, Method::Boundary] {
            for candidates in [Candidates::Mined, Candidates::Prefix] {
                let options = AlignOptions { vocab_align: VocabAlign::Soft, onehot: OneHot::Next, method, candidates };
                let out = aligner.align_batch_with(&input, &options).unwrap();
                assert_eq!(out.counts.matched, 6);
                assert!((out.counts.kept_mass - 6.0).abs() < 1e-5);
                assert_eq!(out.ids, topk_ids.iter().map(|&c| c as i32).collect::<Vec<_>>());
                for (got, logit) in out.logits.chunks(3).zip(topk_logits.chunks(3)) {
                    let expected: Vec<f32> = match candidates {
                        Candidates::Mined => logit.to_vec(),
                        Candidates::Prefix => {
                            let total: f32 = logit.iter().map(|l| l.exp()).sum();
                            logit.iter().map(|l| l - total.ln()).collect()
                        }
                    };
                    assert!(got.iter().zip(&expected).all(|(a, b)| (a - b).abs() < 1e-5), "{got:?} {expected:?}");
                }
            }
        }
    }

    #[test]
    fn prefix_candidates_sum_on_a_shared_image() {
        let source = strings(&["Ġthe", "Ġthere", "Ġtheir", "Ġx"]);
        let target = strings(&["▁the", "▁th", "▁y"]);
        let aligner = Aligner::new(source, target, None, None).unwrap();
        assert_eq!(aligner.prefix_map(), &[0, 0, 0, -1]);
    }
}
