//! Step 3 of FuseLLM: carry each source position's top-k distribution over to
//! the target position it is aligned with, in the target vocabulary; fill the
//! other positions with a one-hot stand-in. Batched over texts, in parallel.

use std::collections::HashMap;
use std::sync::OnceLock;

use rayon::prelude::*;

use crate::align::{dtw_align, DtwScratch, RowCost};
use crate::edit_distance::{dp_distance, PatternTable};
use crate::error::{Error, Result};
use crate::vocab::{check_marker, detect_marker, first_occurrences, Alphabet, SymbolTable, BYTE_LEVEL_MARKER};
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
    alphabet_size: usize,
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
        let mut alphabet = Alphabet::default();
        let source_stripped = SymbolTable::encode(&source_plain, &mut alphabet);
        let target_stripped = SymbolTable::encode(&target_plain, &mut alphabet);

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
            alphabet_size: alphabet.len(),
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

/// Per-thread scratch space.
struct Scratch {
    table: PatternTable,
    dtw: DtwScratch,
    source: Vec<usize>,
    target: Vec<usize>,
    source_ends: Vec<u64>,
    target_ends: Vec<u64>,
}

struct TokenCost<'a> {
    aligner: &'a Aligner,
    source: &'a [usize],
    target: &'a [usize],
    table: &'a mut PatternTable,
    row: usize,
    row_fits: bool,
}

impl RowCost for TokenCost<'_> {
    fn set_row(&mut self, i: usize) {
        self.row = self.source[i];
        self.row_fits = self.table.set(self.aligner.source_stripped.get(self.row));
    }

    #[inline]
    fn cost(&mut self, j: usize) -> u32 {
        let a = self.aligner;
        let t = self.target[j];
        if a.source_stripped_class[self.row] == a.target_stripped_class[t] {
            0
        } else if self.row_fits {
            self.table.distance(a.target_stripped.get(t))
        } else {
            dp_distance(a.source_stripped.get(self.row), a.target_stripped.get(t))
        }
    }
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

        let plain_ends = |ids: &[usize], table: &SymbolTable, ends: &mut Vec<u64>| {
            ends.clear();
            let mut total = 0u64;
            ends.extend(ids.iter().map(|&t| {
                total += table.get(t).len() as u64;
                total
            }));
        };
        plain_ends(&scratch.source, &self.source_stripped, &mut scratch.source_ends);
        plain_ends(&scratch.target, &self.target_stripped, &mut scratch.target_ends);
        let spans = {
            let mut cost = TokenCost {
                aligner: self,
                source: &scratch.source,
                target: &scratch.target,
                table: &mut scratch.table,
                row: 0,
                row_fits: false,
            };
            dtw_align(&scratch.source_ends, &scratch.target_ends, &mut cost, &mut scratch.dtw)
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
        let text_stride = (max_length * k_out).max(1);
        let results: Vec<Result<AlignCounts>> = ids
            .par_chunks_mut(text_stride)
            .zip(logits.par_chunks_mut(text_stride))
            .zip(status.par_chunks_mut(max_length.max(1)))
            .enumerate()
            .take(batch)
            .map_init(
                || Scratch {
                    table: PatternTable::new(self.alphabet_size),
                    dtw: DtwScratch::default(),
                    source: Vec::new(),
                    target: Vec::new(),
                    source_ends: Vec::new(),
                    target_ends: Vec::new(),
                },
                |scratch, (b, ((ids, logits), status))| {
                    let out = TextOutput { ids, logits, status };
                    self.align_text(b, input, vocab_align, onehot, map, scratch, out, k_out)
                },
            )
            .collect();
        let mut counts = AlignCounts::default();
        for r in results {
            counts.add(&r?);
        }
        Ok(AlignedOutput { ids, logits, status, batch, max_length, k_out, counts })
    }
}
