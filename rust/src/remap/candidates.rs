//! How the top-k candidates of one matched position reach the target
//! vocabulary: one image each, repeats dropped (the published MinED way), or
//! merged by image with their probabilities summed (byte-prefix candidates).

use crate::remap::block_row;
use crate::remap::fast_math::exp_nonpositive;
use crate::remap::softmax::ExpBlock;

/// What one matched position received.
pub struct Written {
    pub len: usize,
    /// Some candidate was left out.
    pub dropped: bool,
    /// Share of the top-k probability mass that was written.
    pub kept_mass: f32,
}

/// Per-thread buffers, reused from text to text.
#[derive(Default)]
pub struct CandidateScratch {
    k: usize,
    /// Per slot of a text's `[rows, k]` top-k block: the candidate's image,
    /// [`NO_IMAGE`] or [`NO_CANDIDATE`].
    images: Vec<i32>,
    /// Per row: every slot holds a candidate with an image and no two images
    /// are equal, so the row is written without further checks.
    plain_rows: Vec<bool>,
    repeats: RepeatFilter,
    /// Slots of a row whose candidate was written.
    kept_slots: Vec<usize>,
    /// Distinct images of a merged row, in order of first appearance, and
    /// what their candidates add up to.
    group_ids: Vec<i32>,
    groups: Vec<Group>,
    /// The softmax terms of a text's rows (merged candidates), or of the one
    /// row whose kept share is wanted (first images).
    block: ExpBlock,
}

const NO_IMAGE: i32 = -1;
const NO_CANDIDATE: i32 = -2;

/// Tells rows whose images are surely distinct with one table access per
/// candidate instead of a comparison per pair.
#[derive(Default)]
struct RepeatFilter {
    /// Per hash slot of an image: the stamp of the last row that listed one.
    last_row_of: Vec<u16>,
    row_stamp: u16,
}

/// Hash slots of [`RepeatFilter`]: two of ten random images share one about
/// once in a hundred rows.
const SLOTS: usize = 4096;

impl RepeatFilter {
    /// Starts a row: no image seen yet.
    #[inline]
    fn start_row(&mut self) {
        if self.last_row_of.is_empty() {
            self.last_row_of = vec![0; SLOTS];
        }
        // A stamp that wraps around can only report a false repeat.
        self.row_stamp = self.row_stamp.wrapping_add(1);
    }

    /// Writes the image of every candidate of `row` to `images` and tells
    /// whether the row is plain: every slot has a candidate with an image and
    /// no two images are equal. `false` also when two images share a hash
    /// slot; the callers' slower paths are exact either way.
    #[inline]
    fn images_of_row<C: Copy + Into<i64>>(&mut self, row: &[C], image: impl Fn(usize) -> i32, images: &mut [i32]) -> bool {
        self.start_row();
        let (last_row_of, stamp) = (&mut self.last_row_of[..SLOTS], self.row_stamp);
        let mut plain = true;
        // No early exit, which keeps the loop branch-free.
        for (&c, out) in row.iter().zip(images) {
            let c: i64 = c.into();
            let id = if c < 0 { NO_CANDIDATE } else { image(c as usize).max(NO_IMAGE) };
            let slot = &mut last_row_of[id as u32 as usize % SLOTS];
            plain &= (id >= 0) & (*slot != stamp);
            *slot = stamp;
            *out = id;
        }
        plain
    }
}

impl CandidateScratch {
    /// Prepares the `[rows, k]` top-k block of one text: the image of every
    /// candidate of the rows marked in `rows_used`, all looked up in one pass so
    /// that the lookups (random reads of a vocabulary-sized table) overlap
    /// instead of waiting in turn; with `softmax`, also the softmax terms that
    /// [`CandidateScratch::merge_by_image`] needs.
    pub fn prepare_rows<C: Copy + Into<i64>>(
        &mut self,
        ids: &[C],
        logits: &[f32],
        k: usize,
        image: impl Fn(usize) -> i32,
        rows_used: &[bool],
        softmax: bool,
    ) {
        self.k = k;
        let rows = ids.len().checked_div(k).map_or(rows_used.len(), |rows| rows.min(rows_used.len()));
        self.images.clear();
        self.images.resize(rows * k, NO_CANDIDATE);
        self.plain_rows.clear();
        self.plain_rows.resize(rows, false);
        if k > 0 {
            let rows_out = self.images.chunks_exact_mut(k).zip(&mut self.plain_rows);
            for ((row, &used), (images, plain)) in ids.chunks_exact(k).zip(rows_used).zip(rows_out) {
                // A row no position takes costs no lookups.
                if used {
                    *plain = self.repeats.images_of_row(row, &image, images);
                }
            }
        }
        if softmax {
            self.block.fill(ids, logits, k, rows_used);
        }
    }

    /// Writes each candidate's image with its logit; a candidate without an
    /// image, or with one already written, is dropped (the published
    /// behaviour). `row` is row `i` of the block given to
    /// [`CandidateScratch::prepare_rows`].
    pub fn first_image_only<C: Copy + Into<i64>>(
        &mut self,
        i: usize,
        row: &[C],
        row_logits: &[f32],
        ids: &mut [i32],
        logits: &mut [f32],
    ) -> Written {
        let images = block_row(&self.images, self.k, i);
        let mut written = Written { len: 0, dropped: false, kept_mass: 1.0 };
        // The common case: every candidate has an image of its own.
        if self.plain_rows[i] {
            ids[..images.len()].copy_from_slice(images);
            logits[..images.len()].copy_from_slice(row_logits);
            written.len = images.len();
            return written;
        }
        self.kept_slots.clear();
        for (slot, (&id, &logit)) in images.iter().zip(row_logits).enumerate() {
            if id == NO_CANDIDATE {
                continue;
            }
            if id == NO_IMAGE || ids[..written.len].contains(&id) {
                written.dropped = true;
                continue;
            }
            ids[written.len] = id;
            logits[written.len] = logit;
            written.len += 1;
            self.kept_slots.push(slot);
        }
        // The kept share is 1 unless something was dropped: only then the softmax.
        if written.dropped {
            self.block.fill(row, row_logits, row.len(), &[true]);
            let exps = self.block.row(0);
            written.kept_mass = self.block.kept_share(0, self.kept_slots.iter().map(|&slot| exps[slot]).sum());
        }
        written
    }

    /// Sums the probabilities of candidates with the same image and writes the
    /// sums as log-probabilities, most probable first; candidates without an
    /// image are dropped. The probabilities are the softmax over the list, or,
    /// where the values are `calibrated` log-probabilities, the values' own. Row
    /// `i` of the block given to [`CandidateScratch::prepare_rows`] (with the
    /// softmax).
    pub fn merge_by_image(
        &mut self,
        i: usize,
        row_logits: &[f32],
        calibrated: bool,
        ids: &mut [i32],
        logits: &mut [f32],
    ) -> Written {
        let log_normalizer = if calibrated { 0.0 } else { self.block.log_normalizer(i) };
        if let Some(written) = self.write_distinct(i, row_logits, log_normalizer, ids, logits) {
            return written;
        }
        self.group_ids.clear();
        self.groups.clear();
        let mut written = Written { len: 0, dropped: false, kept_mass: 0.0 };
        let images = block_row(&self.images, self.k, i);
        for (&id, &logit) in images.iter().zip(row_logits) {
            if id < 0 {
                written.dropped |= id == NO_IMAGE;
                continue;
            }
            match self.group_ids.iter().position(|&g| g == id) {
                Some(g) => self.groups[g].add(logit),
                None => {
                    self.group_ids.push(id);
                    self.groups.push(Group { id, top: logit, scaled_sum: 1.0, log_prob: 0.0 });
                }
            }
        }
        for group in &mut self.groups {
            // A lone candidate needs no logarithm of its own.
            let log_sum = if group.scaled_sum == 1.0 { 0.0 } else { group.scaled_sum.ln() };
            group.log_prob = group.top + log_sum - log_normalizer;
        }
        // Top-k lists come sorted, so the merged list mostly is too.
        if !self.groups.is_sorted_by(|a, b| a.log_prob >= b.log_prob) {
            self.groups.sort_by(|a, b| b.log_prob.total_cmp(&a.log_prob));
        }
        for (slot, group) in self.groups.iter().enumerate() {
            ids[slot] = group.id;
            logits[slot] = group.log_prob;
        }
        written.len = self.groups.len();
        self.set_kept_mass(i, &mut written);
        written
    }

    /// The share of row `i`'s probability mass that a merged row kept: all of
    /// it unless a candidate without an image was dropped, so the terms are
    /// only added up then.
    fn set_kept_mass(&self, i: usize, written: &mut Written) {
        written.kept_mass = if written.dropped {
            let images = block_row(&self.images, self.k, i);
            let kept = images.iter().zip(self.block.row(i)).filter(|(&id, _)| id >= 0).map(|(_, &exp)| exp).sum();
            self.block.kept_share(i, kept)
        } else if written.len > 0 {
            1.0
        } else {
            0.0
        };
    }

    /// The common case of [`CandidateScratch::merge_by_image`]: every slot
    /// holds a candidate with an image, no two share one and their logits come
    /// in decreasing order, so the row is written as it is, without grouping.
    /// `None` otherwise.
    fn write_distinct(
        &mut self,
        i: usize,
        row_logits: &[f32],
        log_normalizer: f32,
        ids: &mut [i32],
        logits: &mut [f32],
    ) -> Option<Written> {
        let images = block_row(&self.images, self.k, i);
        // Over the whole row without early exit, so that it vectorizes.
        let sorted = row_logits.windows(2).fold(true, |ok, pair| ok & (pair[0] >= pair[1]));
        if !(self.plain_rows[i] && sorted) {
            return None;
        }
        ids[..images.len()].copy_from_slice(images);
        for (out, &logit) in logits.iter_mut().zip(row_logits) {
            *out = logit - log_normalizer;
        }
        Some(Written { len: images.len(), dropped: false, kept_mass: 1.0 })
    }
}

/// The candidates of a merged row that share one image: their log-sum-exp is
/// kept as `top + ln(scaled_sum)`, with `top` the largest of their logits, so
/// it stays finite however small their probabilities are.
struct Group {
    id: i32,
    top: f32,
    scaled_sum: f32,
    log_prob: f32,
}

impl Group {
    fn add(&mut self, logit: f32) {
        if logit > self.top {
            self.scaled_sum = self.scaled_sum * exp_nonpositive(self.top - logit) + 1.0;
            self.top = logit;
        } else {
            self.scaled_sum += exp_nonpositive(logit - self.top);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merged_as(row: &[i64], row_logits: &[f32], image: &[i32], calibrated: bool) -> (Vec<i32>, Vec<f32>, Written) {
        let (mut ids, mut logits) = (vec![-1; row.len()], vec![0.0; row.len()]);
        let mut scratch = CandidateScratch::default();
        scratch.prepare_rows(row, row_logits, row.len(), |c| image[c], &[true], true);
        let written = scratch.merge_by_image(0, row_logits, calibrated, &mut ids, &mut logits);
        (ids[..written.len].to_vec(), logits[..written.len].to_vec(), written)
    }

    fn merged(row: &[i64], row_logits: &[f32], image: &[i32]) -> (Vec<i32>, Vec<f32>, Written) {
        merged_as(row, row_logits, image, false)
    }

    #[test]
    fn calibrated_log_probabilities_are_summed_as_they_are() {
        // True probabilities 0.5, 0.2 and 0.1 (the tail holds 0.2); candidates 0 and 2 share image 5.
        let log_probs = [0.5f32.ln(), 0.2f32.ln(), 0.1f32.ln()];
        let (ids, logits, written) = merged_as(&[0, 1, 2], &log_probs, &[5, 7, 5], true);
        assert_eq!(ids, vec![5, 7]);
        assert!((logits[0] - 0.6f32.ln()).abs() < 1e-6 && (logits[1] - 0.2f32.ln()).abs() < 1e-6);
        assert_eq!((written.dropped, written.kept_mass), (false, 1.0));
        let (_, distinct, _) = merged_as(&[0, 1, 2], &log_probs, &[5, 7, 6], true);
        assert_eq!(distinct, log_probs.to_vec());
    }

    #[test]
    fn candidates_with_one_image_sum_their_probabilities() {
        // Candidates 0 and 2 land on image 5, candidate 1 on 7, candidate 3 on none.
        let (ids, logits, written) = merged(&[0, 1, 2, 3, -1], &[0.0, 1.0, 0.0, 0.5, f32::NAN], &[5, 7, 5, -1]);
        let z = (2.0 + 1f64.exp() + 0.5f64.exp()).ln();
        assert_eq!(ids, vec![7, 5]);
        assert!((logits[0] as f64 - (1.0 - z)).abs() < 1e-6);
        assert!((logits[1] as f64 - (2f64.ln() - z)).abs() < 1e-6);
        assert!(written.dropped);
        let kept = (2.0 + 1f64.exp()) / (2.0 + 1f64.exp() + 0.5f64.exp());
        assert!((written.kept_mass as f64 - kept).abs() < 1e-6);
    }

    #[test]
    fn merged_log_probabilities_stay_finite_far_below_the_top() {
        let (ids, logits, _) = merged(&[0, 1, 2], &[200.0, 0.0, -1.0], &[3, 4, 4]);
        assert_eq!(ids, vec![3, 4]);
        let expected = (1f64 + (-1f64).exp()).ln() - 200.0;
        assert!((logits[1] as f64 - expected).abs() < 1e-4, "{}", logits[1]);
    }

    fn first_images(row: &[i64], row_logits: &[f32], image: &[i32], ids: &mut [i32], logits: &mut [f32]) -> Written {
        let mut scratch = CandidateScratch::default();
        scratch.prepare_rows(row, row_logits, row.len(), |c| image[c], &[true], false);
        scratch.first_image_only(0, row, row_logits, ids, logits)
    }

    #[test]
    fn distinct_images_in_one_hash_slot_are_kept_apart() {
        let image = [1, 1 + SLOTS as i32, 1];
        let (ids, _, written) = merged(&[0, 1], &[1.0, 0.0], &image);
        assert_eq!((ids, written.dropped), (vec![1, 1 + SLOTS as i32], false));
        let (mut ids, mut logits) = (vec![-1; 3], vec![0.0; 3]);
        let written = first_images(&[0i64, 1, 2], &[1.0, 0.0, -1.0], &image, &mut ids, &mut logits);
        assert_eq!((&ids[..written.len], written.dropped), (&[1, 1 + SLOTS as i32][..], true));
    }

    proptest::proptest! {
        #[test]
        fn merged_rows_equal_summed_softmax_probabilities(
            slots in proptest::collection::vec((-1i64..12, -30.0f32..30.0), 1..12),
        ) {
            // Candidate c has image c / 2 (pairs merge), none for c >= 10.
            let image: Vec<i32> = (0..12).map(|c| if c >= 10 { -1 } else { c / 2 }).collect();
            let (row, row_logits): (Vec<i64>, Vec<f32>) = slots.into_iter().unzip();
            let (ids, logits, written) = merged(&row, &row_logits, &image);

            let listed: Vec<(i64, f64)> = row.iter().zip(&row_logits).filter(|(&c, _)| c >= 0)
                .map(|(&c, &l)| (c, l as f64)).collect();
            let max = listed.iter().map(|&(_, l)| l).fold(f64::NEG_INFINITY, f64::max);
            let total: f64 = listed.iter().map(|&(_, l)| (l - max).exp()).sum();
            let mut expected: std::collections::BTreeMap<i32, f64> = Default::default();
            for &(c, l) in &listed {
                if image[c as usize] >= 0 {
                    *expected.entry(image[c as usize]).or_default() += (l - max).exp() / total;
                }
            }
            proptest::prop_assert_eq!(ids.len(), expected.len());
            for (id, log_prob) in ids.iter().zip(&logits) {
                let p = expected[id];
                proptest::prop_assert!((*log_prob as f64 - p.ln()).abs() < 1e-4 * (1.0 + p.ln().abs()), "{} {} {}", id, log_prob, p.ln());
            }
            proptest::prop_assert!(logits.windows(2).all(|w| w[0] >= w[1]));
            let kept: f64 = expected.values().sum();
            proptest::prop_assert!((written.kept_mass as f64 - kept).abs() < 1e-5);
            proptest::prop_assert_eq!(written.dropped, listed.iter().any(|&(c, _)| image[c as usize] < 0));
        }

        #[test]
        fn first_images_are_written_in_order_and_repeats_dropped(
            slots in proptest::collection::vec((-1i64..12, -30.0f32..30.0), 1..12),
        ) {
            let image: Vec<i32> = (0..12).map(|c| if c >= 10 { -1 } else { c / 2 }).collect();
            let (row, row_logits): (Vec<i64>, Vec<f32>) = slots.into_iter().unzip();
            let (mut ids, mut logits) = (vec![-1; row.len()], vec![0.0; row.len()]);
            let written = first_images(&row, &row_logits, &image, &mut ids, &mut logits);

            let (mut expected_ids, mut expected_logits, mut dropped) = (vec![], vec![], false);
            let max = row.iter().zip(&row_logits).filter(|(&c, _)| c >= 0).map(|(_, &l)| l as f64).fold(f64::NEG_INFINITY, f64::max);
            let (mut kept, mut total) = (0.0f64, 0.0f64);
            for (&c, &l) in row.iter().zip(&row_logits).filter(|(&c, _)| c >= 0) {
                let (id, p) = (image[c as usize], (l as f64 - max).exp());
                total += p;
                if id < 0 || expected_ids.contains(&id) {
                    dropped = true;
                } else {
                    expected_ids.push(id);
                    expected_logits.push(l);
                    kept += p;
                }
            }
            proptest::prop_assert_eq!(&ids[..written.len], &expected_ids[..]);
            proptest::prop_assert_eq!(&logits[..written.len], &expected_logits[..]);
            proptest::prop_assert_eq!(written.dropped, dropped);
            let kept_share = if dropped { kept / total } else { 1.0 };
            proptest::prop_assert!((written.kept_mass as f64 - kept_share).abs() < 1e-5);
        }
    }
}

