//! Step 3 of FuseLLM: carry each source position's top-k distribution over to
//! the target position it is aligned with, in the target vocabulary; fill the
//! other positions with a one-hot stand-in. Batched over texts, in parallel.

use std::collections::HashMap;
use std::sync::OnceLock;

use rayon::prelude::*;

use crate::align::{dtw_align, DtwScratch, RemainingCost};
use crate::token_cost::{StrippedVocab, TextCosts};
use crate::error::{Error, Result};
use crate::vocab::{
    check_marker, detect_marker, first_occurrences, text_length, Alphabet, SymbolTable, BYTE_LEVEL_MARKER,
};
use crate::vocab_map::{build_vocab_map, VocabMap};

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
    /// Per source id: the lowest target id whose string equals the source string
    /// with its marker swapped, or -1.
    swapped_exact: Vec<i32>,
    /// Per target id: the lowest target id with the same string.
    target_class: Vec<u32>,
    /// Marker-free strings of both vocabularies, in one alphabet, with shared
    /// equality classes so that equal strings cost nothing to compare.
    source_stripped: SymbolTable,
    target_stripped: SymbolTable,
    source_stripped_class: Vec<u32>,
    target_stripped_class: Vec<u32>,
    stripped_classes: usize,
    alphabet_size: usize,
    source_text_len: Vec<u32>,
    target_text_len: Vec<u32>,
    vocab_map: OnceLock<VocabMap>,
    /// Marker-swapped source string -> a source id with that string; only needed
    /// for the first-token quirk of byte-level sources.
    swapped_lookup: OnceLock<HashMap<String, u32>>,
}

/// Counts over the positions of a batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AlignCounts {
    pub positions: u64,
    pub matched: u64,
    pub onehot: u64,
    pub empty: u64,
    /// Matched positions whose source top-k had candidates that could not be
    /// mapped (hard mode) or were repeats of an earlier candidate's target id.
    pub dropped_candidates: u64,
}

impl AlignCounts {
    fn add(&mut self, other: &AlignCounts) {
        self.positions += other.positions;
        self.matched += other.matched;
        self.onehot += other.onehot;
        self.empty += other.empty;
        self.dropped_candidates += other.dropped_candidates;
    }
}

/// A batch of texts. Sequences are addressed by start (in positions) and length
/// into flat buffers, so ragged batches (values plus offsets) and padded ones
/// (start = row * width) are read the same way without copying.
pub struct BatchInput<'a, S, C> {
    pub target_ids: &'a [S],
    pub target_starts: &'a [usize],
    pub target_lengths: &'a [usize],
    pub source_ids: &'a [S],
    pub source_starts: &'a [usize],
    pub source_lengths: &'a [usize],
    /// `[positions, k]` row-major; row `source_topk_starts[b] + i` holds source
    /// position `i` of text `b`.
    pub topk_ids: &'a [C],
    pub topk_logits: &'a [f32],
    pub topk_starts: &'a [usize],
    pub k: usize,
}

/// The aligned batch: `[batch, max_length, k_out]` ids (-1 empty) and logits,
/// `[batch, max_length]` status.
#[derive(Debug, Clone, PartialEq)]
pub struct AlignedOutput {
    pub ids: Vec<i32>,
    pub logits: Vec<f32>,
    pub status: Vec<i8>,
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
        if source_tokens.is_empty() {
            return Err(Error::invalid("source_tokens", "the source vocabulary is empty"));
        }
        if target_tokens.is_empty() {
            return Err(Error::invalid("target_tokens", "the target vocabulary is empty"));
        }
        let source_marker = match source_marker {
            Some(m) => m,
            None => detect_marker(&source_tokens, "source_marker")?,
        }
        .to_string();
        let target_marker = match target_marker {
            Some(m) => m,
            None => detect_marker(&target_tokens, "target_marker")?,
        }
        .to_string();
        check_marker(&source_marker, "source_marker")?;
        check_marker(&target_marker, "target_marker")?;

        let (target_class, first_target) = first_occurrences(&target_tokens);
        let swapped_exact = source_tokens
            .iter()
            .map(|s| first_target.get(s.replace(&source_marker, &target_marker).as_str()).map_or(-1, |&t| t as i32))
            .collect();

        let source_plain: Vec<String> = source_tokens.iter().map(|s| s.replace(&source_marker, "")).collect();
        let target_plain: Vec<String> = target_tokens.iter().map(|s| s.replace(&target_marker, "")).collect();
        let mut classes: HashMap<&str, u32> = HashMap::new();
        let mut stripped_classes = [Vec::new(), Vec::new()];
        for (plain, out) in [&source_plain, &target_plain].into_iter().zip(&mut stripped_classes) {
            for s in plain {
                let next = classes.len() as u32;
                out.push(*classes.entry(s.as_str()).or_insert(next));
            }
        }
        let [source_stripped_class, target_stripped_class] = stripped_classes;
        let stripped_classes = classes.len();
        let mut alphabet = Alphabet::default();
        let source_stripped = SymbolTable::encode(&source_plain, &mut alphabet);
        let target_stripped = SymbolTable::encode(&target_plain, &mut alphabet);

        let source_text_len = source_tokens.iter().map(|t| text_length(t, &source_marker)).collect();
        let target_text_len = target_tokens.iter().map(|t| text_length(t, &target_marker)).collect();
        Ok(Aligner {
            source_tokens,
            target_tokens,
            source_marker,
            target_marker,
            swapped_exact,
            target_class,
            source_stripped,
            target_stripped,
            source_stripped_class,
            target_stripped_class,
            stripped_classes,
            alphabet_size: alphabet.len(),
            source_text_len,
            target_text_len,
            vocab_map: OnceLock::new(),
            swapped_lookup: OnceLock::new(),
        })
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
        let map = build_vocab_map(&self.source_tokens, &self.target_tokens, &self.source_marker, &self.target_marker)?;
        Ok(self.vocab_map.get_or_init(|| map))
    }

    fn stripped_vocab(&self) -> StrippedVocab<'_> {
        StrippedVocab {
            source: &self.source_stripped,
            target: &self.target_stripped,
            source_text_len: &self.source_text_len,
            target_text_len: &self.target_text_len,
            source_class: &self.source_stripped_class,
            target_class: &self.target_stripped_class,
            classes: self.stripped_classes,
            alphabet: self.alphabet_size,
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
        let t_class = self.target_class[target_id] as i32;
        let target = &self.target_tokens[target_id];
        // Quirk of the published code for byte-level sources: a first target token
        // that starts with a space marker gets one prepended to the source token.
        if self.source_marker == BYTE_LEVEL_MARKER && j == 0 && target.starts_with(&self.target_marker) {
            let swapped = self.source_tokens[source_id].replace(&self.source_marker, &self.target_marker);
            if !swapped.starts_with(&self.target_marker) {
                let prefixed = format!("{}{}", self.target_marker, swapped);
                return prefixed == *target
                    || map.is_some_and(|map| {
                        self.swapped_lookup()
                            .get(&prefixed)
                            .is_some_and(|&k| self.target_class[map.target_ids[k as usize] as usize] as i32 == t_class)
                    });
            }
        }
        self.swapped_exact[source_id] == t_class
            || map.is_some_and(|map| self.target_class[map.target_ids[source_id] as usize] as i32 == t_class)
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
}

fn read_ids<S: Copy + Into<i64>>(
    values: &[S],
    vocab_size: usize,
    arg: &'static str,
    text: usize,
    out: &mut Vec<usize>,
) -> Result<()> {
    out.clear();
    for (pos, &v) in values.iter().enumerate() {
        let v: i64 = v.into();
        if v < 0 || v as u64 >= vocab_size as u64 {
            return Err(Error::invalid(
                arg,
                format!("text {text}, position {pos}: id {v} is outside the vocabulary (size {vocab_size})"),
            ));
        }
        out.push(v as usize);
    }
    Ok(())
}

struct TextOutput<'a> {
    ids: &'a mut [i32],
    logits: &'a mut [f32],
    status: &'a mut [i8],
}

impl Aligner {
    #[allow(clippy::too_many_arguments)]
    fn align_text<S: Copy + Into<i64>, C: Copy + Into<i64>>(
        &self,
        b: usize,
        input: &BatchInput<'_, S, C>,
        vocab_align: VocabAlign,
        onehot: OneHot,
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
        let rows = input.topk_starts[b] * k..(input.topk_starts[b] + sl) * k;
        let (topk_ids, topk_logits) = (&input.topk_ids[rows.clone()], &input.topk_logits[rows]);
        for (slot, (&c, &logit)) in topk_ids.iter().zip(topk_logits).enumerate() {
            let c: i64 = c.into();
            if c >= self.source_size() as i64 {
                return Err(Error::invalid(
                    "source_topk_ids",
                    format!(
                        "text {b}, position {}: id {c} is outside the source vocabulary (size {})",
                        slot / k.max(1),
                        self.source_size()
                    ),
                ));
            }
            if c >= 0 && !logit.is_finite() {
                return Err(Error::invalid(
                    "source_topk_logits",
                    format!("text {b}, position {}: logit {logit} is not finite", slot / k.max(1)),
                ));
            }
        }

        scratch.costs.load(&self.stripped_vocab(), &scratch.source, &scratch.target);
        let spans = {
            let c = &mut scratch.costs;
            let (source_ends, target_ends) = (std::mem::take(&mut c.source_ends), std::mem::take(&mut c.target_ends));
            let (rows_after, cols_after) = (std::mem::take(&mut c.rows_after), std::mem::take(&mut c.cols_after));
            let remaining = RemainingCost { rows_after: &rows_after, cols_after: &cols_after };
            let spans = dtw_align(&source_ends, &target_ends, &remaining, &mut c.costs(), &mut scratch.dtw);
            (c.source_ends, c.target_ends, c.rows_after, c.cols_after) = (source_ends, target_ends, rows_after, cols_after);
            spans
        };

        let mut counts = AlignCounts { positions: tl as u64, ..AlignCounts::default() };
        let target = &scratch.target;
        for (j, span) in spans.iter().enumerate() {
            let ids = &mut out.ids[j * k_out..(j + 1) * k_out];
            let logits = &mut out.logits[j * k_out..(j + 1) * k_out];
            let single = match span {
                Some((first, last)) if first == last => Some(*first as usize),
                _ => None,
            };
            let matched = single.filter(|&i| {
                let map = (vocab_align == VocabAlign::Soft).then_some(map).flatten();
                self.position_matches(j, scratch.source[i], target[j], map)
            });
            if let Some(i) = matched {
                let mut len = 0usize;
                let row = &topk_ids[i * k..(i + 1) * k];
                let row_logits = &topk_logits[i * k..(i + 1) * k];
                let mut dropped = false;
                for (&c, &logit) in row.iter().zip(row_logits) {
                    let c: i64 = c.into();
                    if c < 0 {
                        continue;
                    }
                    let mapped = match (vocab_align, map) {
                        (VocabAlign::Soft, Some(map)) => map.target_ids[c as usize],
                        _ => self.swapped_exact[c as usize],
                    };
                    if mapped < 0 || ids[..len].contains(&mapped) {
                        dropped = true;
                        continue;
                    }
                    ids[len] = mapped;
                    logits[len] = logit;
                    len += 1;
                }
                counts.dropped_candidates += u64::from(dropped);
                if len == 0 {
                    out.status[j] = status::EMPTY;
                    counts.empty += 1;
                } else {
                    out.status[j] = status::MATCHED;
                    counts.matched += 1;
                }
                continue;
            }
            let stand_in = match onehot {
                OneHot::Current => Some(target[j]),
                OneHot::Next => target.get(j + 1).copied(),
            };
            match stand_in {
                Some(t) => {
                    ids[0] = t as i32;
                    logits[0] = 1.0;
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

    /// Aligns a batch. Runs on the current rayon pool; builds the MinED map first
    /// when `vocab_align` is soft and no map is present.
    pub fn align_batch<S, C>(
        &self,
        input: &BatchInput<'_, S, C>,
        vocab_align: VocabAlign,
        onehot: OneHot,
    ) -> Result<AlignedOutput>
    where
        S: Copy + Into<i64> + Sync,
        C: Copy + Into<i64> + Sync,
    {
        let batch = input.target_starts.len();
        for (name, len) in [
            ("target_lengths", input.target_lengths.len()),
            ("source_ids", input.source_starts.len()),
            ("source_lengths", input.source_lengths.len()),
            ("source_topk_ids", input.topk_starts.len()),
        ] {
            if len != batch {
                return Err(Error::invalid(name, format!("has {len} texts but target_ids has {batch}")));
            }
        }
        if input.topk_ids.len() != input.topk_logits.len() {
            return Err(Error::invalid("source_topk_logits", "shape differs from source_topk_ids"));
        }
        for b in 0..batch {
            let bounds = [
                ("target_ids", input.target_starts[b] + input.target_lengths[b], input.target_ids.len()),
                ("source_ids", input.source_starts[b] + input.source_lengths[b], input.source_ids.len()),
                (
                    "source_topk_ids",
                    (input.topk_starts[b] + input.source_lengths[b]) * input.k,
                    input.topk_ids.len(),
                ),
            ];
            for (name, end, len) in bounds {
                if end > len {
                    return Err(Error::invalid(name, format!("text {b} reaches past the end of the array")));
                }
            }
        }
        let map = match vocab_align {
            VocabAlign::Soft => Some(self.ensure_vocab_map()?),
            VocabAlign::Hard => None,
        };
        let max_length = input.target_lengths.iter().copied().max().unwrap_or(0);
        let k_out = input.k.max(1);
        let mut ids = vec![-1i32; batch * max_length * k_out];
        let mut logits = vec![0f32; batch * max_length * k_out];
        let mut status = vec![status::PADDING; batch * max_length];
        // One output slice per text, also when every text is empty, so that
        // every text's input is still checked.
        let text_stride = max_length * k_out;
        let id_chunks: Vec<&mut [i32]> = split_per_text(&mut ids, text_stride, batch);
        let logit_chunks: Vec<&mut [f32]> = split_per_text(&mut logits, text_stride, batch);
        let status_chunks: Vec<&mut [i8]> = split_per_text(&mut status, max_length, batch);
        let results: Vec<Result<AlignCounts>> = id_chunks
            .into_par_iter()
            .zip(logit_chunks)
            .zip(status_chunks)
            .enumerate()
            .map_init(Scratch::default, |scratch, (b, ((ids, logits), status))| {
                let out = TextOutput { ids, logits, status };
                self.align_text(b, input, vocab_align, onehot, map, scratch, out, k_out)
            })
            .collect();
        let mut counts = AlignCounts::default();
        for r in results {
            counts.add(&r?);
        }
        Ok(AlignedOutput { ids, logits, status, batch, max_length, k_out, counts })
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
            topk_ids: &topk_ids,
            topk_logits: &topk_logits,
            topk_starts: &[0],
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
        assert_eq!(out.counts, AlignCounts { positions: 2, matched: 1, onehot: 0, empty: 1, dropped_candidates: 0 });
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
            topk_ids: &[0i64],
            topk_logits: &[0.0],
            topk_starts: &[0],
            k: 1,
        };
        let err = aligner.align_batch(&input, VocabAlign::Hard, OneHot::Next).unwrap_err();
        assert_eq!(err.to_string(), "target_ids: text 0, position 1: id 5 is outside the vocabulary (size 1)");
    }
}
