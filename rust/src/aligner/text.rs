//! One text of a batch, in four steps: read its ids, check its top-k lists,
//! pair its positions, write every target position.

use crate::aligner::batch::{status, AlignCounts, BatchInput, TextOutput, TokenId};
use crate::aligner::options::{AlignOptions, Method, OneHot};
use crate::aligner::vocabularies::Vocabularies;
use crate::error::{Error, Result};
use crate::pairing::bytes::{pair_by_bytes, reconcile};
use crate::pairing::matching::MatchTest;
use crate::pairing::stripped::StrippedVocab;
use crate::pairing::{DtwPairing, UNMATCHED};
use crate::remap::candidates::CandidateScratch;
use crate::remap::images::Images;
use crate::vocab_map::VocabMap;

/// What every text of one batch is aligned with.
pub(super) struct TextAligner<'a> {
    pub vocabularies: &'a Vocabularies,
    pub match_test: &'a MatchTest,
    pub stripped: &'a StrippedVocab,
    pub options: AlignOptions,
    /// The MinED map where the match test uses it (soft mode).
    pub map: Option<&'a VocabMap>,
    pub images: Images<'a>,
    /// Slots per target position in the output.
    pub k_out: usize,
}

/// Per-thread buffers, reused from text to text.
#[derive(Default)]
pub(super) struct Scratch {
    source: Vec<usize>,
    target: Vec<usize>,
    /// Per target position, the paired source position or [`UNMATCHED`].
    pairs: Vec<u32>,
    dtw: DtwPairing,
    source_text: Vec<u8>,
    target_text: Vec<u8>,
    source_ends: Vec<u32>,
    target_ends: Vec<u32>,
    /// Per source position: whether a target position takes its distribution.
    rows_used: Vec<bool>,
    candidates: CandidateScratch,
}

impl TextAligner<'_> {
    /// Aligns text `b` of `input` into `out`.
    pub fn align_text<S: TokenId, C: TokenId>(
        &self,
        b: usize,
        input: &BatchInput<'_, S, C>,
        scratch: &mut Scratch,
        out: TextOutput<'_>,
    ) -> Result<AlignCounts> {
        let (ts, tl) = (input.target_starts[b], input.target_lengths[b]);
        let (ss, sl) = (input.source_starts[b], input.source_lengths[b]);
        let (source, target) = (&self.vocabularies.source, &self.vocabularies.target);
        read_ids(&input.target_ids[ts..ts + tl], target.tokens.len(), "target_ids", b, &mut scratch.target)?;
        read_ids(&input.source_ids[ss..ss + sl], source.tokens.len(), "source_ids", b, &mut scratch.source)?;
        let k = input.k;
        let (topk_ids, topk_logits) = (&input.topk_ids[b][..sl * k], &input.topk_logits[b][..sl * k]);
        check_topk(topk_ids, topk_logits, k, source.tokens.len(), b)?;
        let mut counts = AlignCounts { positions: tl as u64, ..AlignCounts::default() };
        counts.fallback_texts = u64::from(!self.pair(scratch)?);
        self.write_positions(topk_ids, topk_logits, k, scratch, out, &mut counts);
        Ok(counts)
    }

    /// Fills `scratch.pairs`. Returns `false` when `offsets` or `boundary`
    /// found that the two tokenizations spell different bytes and handed the
    /// text to DTW.
    fn pair(&self, scratch: &mut Scratch) -> Result<bool> {
        let method = self.options.method;
        let (source, target) = (&self.vocabularies.source, &self.vocabularies.target);
        let by_bytes = method != Method::Dtw && {
            source.bytes.concatenate(&scratch.source, &mut scratch.source_text, &mut scratch.source_ends, "source_ids")?;
            target.bytes.concatenate(&scratch.target, &mut scratch.target_text, &mut scratch.target_ends, "target_ids")?;
            reconcile(&scratch.source_text, &scratch.target_text, &mut scratch.source_ends, &mut scratch.target_ends)
        };
        if by_bytes {
            pair_by_bytes(&scratch.source_ends, &scratch.target_ends, method == Method::Offsets, &mut scratch.pairs);
            return Ok(true);
        }
        let (source_ids, target_ids) = (&scratch.source, &scratch.target);
        let matches = |j: usize, i: usize| {
            self.match_test.matches(j, source_ids[i], target_ids[j], self.map, &source.tokens, &target.tokens)
        };
        scratch.dtw.pair(self.stripped, source_ids, target_ids, matches, &mut scratch.pairs);
        Ok(method == Method::Dtw)
    }

    /// Gives every target position the mapped candidates of its paired source
    /// position, or else a one-hot stand-in.
    fn write_positions<C: TokenId>(
        &self,
        topk_ids: &[C],
        topk_logits: &[f32],
        k: usize,
        scratch: &mut Scratch,
        out: TextOutput<'_>,
        counts: &mut AlignCounts,
    ) {
        let images = &self.images;
        scratch.rows_used.clear();
        scratch.rows_used.resize(scratch.source.len(), false);
        for &pair in scratch.pairs.iter().filter(|&&pair| pair != UNMATCHED) {
            scratch.rows_used[pair as usize] = true;
        }
        scratch.candidates.prepare_rows(topk_ids, topk_logits, k, |c| images.of(c), &scratch.rows_used, images.merge());
        let k_out = self.k_out;
        for (j, &pair) in scratch.pairs.iter().enumerate() {
            let ids = &mut out.ids[j * k_out..(j + 1) * k_out];
            let logits = &mut out.logits[j * k_out..(j + 1) * k_out];
            out.status[j] = if pair != UNMATCHED {
                out.source_positions[j] = pair as i32;
                let i = pair as usize;
                let (row, row_logits) = (&topk_ids[i * k..(i + 1) * k], &topk_logits[i * k..(i + 1) * k]);
                let written = if images.merge() {
                    scratch.candidates.merge_by_image(i, row_logits, images.calibrated(), ids, logits)
                } else {
                    scratch.candidates.first_image_only(i, row, row_logits, ids, logits)
                };
                counts.dropped_candidates += u64::from(written.dropped);
                if written.len == 0 {
                    status::EMPTY
                } else {
                    counts.kept_mass += f64::from(written.kept_mass);
                    status::MATCHED
                }
            } else {
                let stand_in = match self.options.onehot {
                    OneHot::Current => Some(scratch.target[j]),
                    OneHot::Next => scratch.target.get(j + 1).copied(),
                };
                match stand_in {
                    Some(t) => {
                        (ids[0], logits[0]) = (t as i32, images.one_hot_value());
                        status::ONEHOT
                    }
                    None => status::EMPTY,
                }
            };
            match out.status[j] {
                status::MATCHED => counts.matched += 1,
                status::ONEHOT => counts.onehot += 1,
                _ => counts.empty += 1,
            }
        }
    }
}

/// The ids of one text as indices, checked against the vocabulary size.
fn read_ids<S: TokenId>(values: &[S], vocab_size: usize, arg: &'static str, text: usize, out: &mut Vec<usize>) -> Result<()> {
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

/// Checks one text's `[rows, k]` top-k lists: every candidate id below
/// `source_size` (a negative one is an empty slot), the logit of every
/// candidate finite.
fn check_topk<C: TokenId>(ids: &[C], logits: &[f32], k: usize, source_size: usize, text: usize) -> Result<()> {
    // Compared in the ids' own type, which vectorizes where 64-bit
    // comparisons of widened 32-bit ids would not.
    let largest = C::saturating_from(source_size as i64 - 1);
    let bad = |(&c, &logit): (&C, &f32)| (c > largest) | ((c >= C::ZERO) & !logit.is_finite());
    // One pass without early exit (it vectorizes); the culprit is looked for
    // only when there is one.
    if !ids.iter().zip(logits).fold(false, |acc, slot| acc | bad(slot)) {
        return Ok(());
    }
    let slot = ids.iter().zip(logits).position(bad).expect("found above");
    let (c, logit) = (ids[slot], logits[slot]);
    let position = slot / k.max(1);
    Err(if c > largest {
        let c: i64 = c.into();
        Error::invalid(
            "source_topk_ids",
            format!("text {text}, position {position}: id {c} is outside the source vocabulary (size {source_size})"),
        )
    } else {
        Error::invalid("source_topk_logits", format!("text {text}, position {position}: logit {logit} is not finite"))
    })
}
