//! A batch of texts as the aligner reads and writes it: the input buffers, the
//! output arrays and the counts.

use crate::error::{Error, Result};
use crate::limits::{element_count, filled_vec, MAX_TEXT_TOKENS};

/// An integer type that token ids arrive in (numpy's int32 and int64).
pub trait TokenId: Copy + Into<i64> + PartialOrd + Send + Sync {
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

impl<S, C> BatchInput<'_, S, C> {
    pub fn batch(&self) -> usize {
        self.target_starts.len()
    }

    /// Checks that every buffer has one entry per text and that every text
    /// lies inside its buffers (the ids themselves are checked text by text).
    pub fn check(&self) -> Result<()> {
        let (batch, texts) = (self.batch(), self.source_starts.len());
        let counts = [
            ("target_lengths", self.target_lengths.len(), batch, "target_ids"),
            ("source_ids", texts, batch, "target_ids"),
            ("source_lengths", self.source_lengths.len(), texts, "source_ids"),
            ("source_topk_ids", self.topk_ids.len(), texts, "source_ids"),
            ("source_topk_logits", self.topk_logits.len(), texts, "source_ids"),
        ];
        for (name, len, expected, other) in counts {
            if len != expected {
                return Err(Error::invalid(name, format!("has {len} texts but {other} has {expected}")));
            }
        }
        for b in 0..batch {
            if self.topk_ids[b].len() != self.topk_logits[b].len() {
                return Err(Error::invalid("source_topk_logits", format!("text {b}: shape differs from source_topk_ids")));
            }
            for (name, length) in [("target_ids", self.target_lengths[b]), ("source_ids", self.source_lengths[b])] {
                if length > MAX_TEXT_TOKENS {
                    return Err(Error::TooLarge {
                        arg: name,
                        msg: format!("text {b} has {length} tokens, more than the {MAX_TEXT_TOKENS} supported"),
                    });
                }
            }
            // An end that overflows lies past the end of any array.
            let bounds = [
                ("target_ids", self.target_starts[b].checked_add(self.target_lengths[b]), self.target_ids.len()),
                ("source_ids", self.source_starts[b].checked_add(self.source_lengths[b]), self.source_ids.len()),
                ("source_topk_ids", self.source_lengths[b].checked_mul(self.k), self.topk_ids[b].len()),
            ];
            for (name, end, len) in bounds {
                if end.is_none_or(|end| end > len) {
                    return Err(Error::invalid(name, format!("text {b} reaches past the end of the array")));
                }
            }
        }
        Ok(())
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
    pub fn add(&mut self, other: &AlignCounts) {
        self.fallback_texts += other.fallback_texts;
        self.kept_mass += other.kept_mass;
        self.positions += other.positions;
        self.matched += other.matched;
        self.onehot += other.onehot;
        self.empty += other.empty;
        self.dropped_candidates += other.dropped_candidates;
    }
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

/// One text's part of an [`AlignedOutput`].
pub(crate) struct TextOutput<'a> {
    pub ids: &'a mut [i32],
    pub logits: &'a mut [f32],
    pub status: &'a mut [i8],
    pub source_positions: &'a mut [i32],
}

impl AlignedOutput {
    /// Every position padding, every slot empty; an error when the arrays are
    /// too large to address or to allocate.
    pub(crate) fn padding(batch: usize, max_length: usize, k_out: usize) -> Result<Self> {
        // The candidates' width is what makes an output large; the arrays are named after it.
        let slots = element_count::<i32>(&[batch, max_length, k_out], "source_topk_ids")?;
        let positions = element_count::<i32>(&[batch, max_length], "target_ids")?;
        Ok(AlignedOutput {
            ids: filled_vec(slots, -1, "source_topk_ids")?,
            logits: filled_vec(slots, 0.0, "source_topk_ids")?,
            status: filled_vec(positions, status::PADDING, "target_ids")?,
            source_positions: filled_vec(positions, -1, "target_ids")?,
            batch,
            max_length,
            k_out,
            counts: AlignCounts::default(),
        })
    }

    /// One part per text, also when every text is empty, so that every text's
    /// input is still read and checked.
    pub(crate) fn per_text(&mut self) -> Vec<(usize, TextOutput<'_>)> {
        let (batch, stride) = (self.batch, self.max_length * self.k_out);
        let ids = split_per_text(&mut self.ids, stride, batch);
        let logits = split_per_text(&mut self.logits, stride, batch);
        let status = split_per_text(&mut self.status, self.max_length, batch);
        let positions = split_per_text(&mut self.source_positions, self.max_length, batch);
        let parts = ids.into_iter().zip(logits).zip(status).zip(positions);
        parts
            .map(|(((ids, logits), status), source_positions)| TextOutput { ids, logits, status, source_positions })
            .enumerate()
            .collect()
    }
}

fn split_per_text<T>(buffer: &mut [T], stride: usize, batch: usize) -> Vec<&mut [T]> {
    if stride == 0 {
        (0..batch).map(|_| <&mut [T]>::default()).collect()
    } else {
        buffer.chunks_mut(stride).collect()
    }
}
