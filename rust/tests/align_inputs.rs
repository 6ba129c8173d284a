//! A property test over everything `Aligner::new` and `Aligner::align_batch`
//! read: random vocabularies (markers, families, special tokens), token
//! sequences, top-k rows, buffer offsets and every option. Whatever they are,
//! no call panics, a call fails exactly when an input is invalid, and a
//! successful one returns arrays of the promised shapes and values.
//!
//! `cargo test --test align_inputs` draws a few hundred cases; with
//! `ALIGN_FUZZ_SECONDS=600` it keeps drawing fresh ones for that long and
//! prints how many ran.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fusellm_fast::aligner::batch::{status, AlignedOutput, BatchInput, TokenId};
use fusellm_fast::aligner::options::{
    AlignOptions, Candidates, Method, Normalize, OneHot, Values, VocabAlign, VocabularyOptions,
};
use fusellm_fast::aligner::Aligner;
use fusellm_fast::error::Error;
use fusellm_fast::parallel::Workers;
use fusellm_fast::text::family::Family;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Cases of one round; the regular test runs one round.
const ROUND: u32 = 256;

/// How the cases ended: vocabularies rejected, batches rejected, batches aligned.
static OUTCOMES: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

fn count(outcome: usize) {
    OUTCOMES[outcome].fetch_add(1, Ordering::Relaxed);
}

#[derive(Debug, Clone)]
struct Side {
    tokens: Vec<String>,
    marker: Option<String>,
    family: Option<Family>,
    special_ids: Vec<u32>,
}

#[derive(Debug, Clone)]
struct Text {
    target: Vec<i64>,
    source: Vec<i64>,
    /// Top-k ids and logits, row-major; any number of rows, not only one per source token.
    topk_ids: Vec<i64>,
    topk_logits: Vec<f32>,
    /// Added to the start and the length of the text's target and source spans
    /// (0 most of the time: the spans are then exactly the text's).
    target_shift: (usize, usize),
    source_shift: (usize, usize),
}

#[derive(Debug, Clone)]
struct Case {
    source: Side,
    target: Side,
    normalize: Normalize,
    special_pairs: Vec<(u32, u32)>,
    texts: Vec<Text>,
    k: usize,
    /// Narrow ids: the top-k ids as int32 rather than int64.
    narrow: bool,
    options: AlignOptions,
}

fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[ĠĊ▁abé<>]{0,4}",
        1 => (0u8..=255).prop_map(|b| format!("<0x{b:02X}>")),
        1 => "[ -~]{0,3}",
    ]
}

fn side() -> impl Strategy<Value = Side> {
    let marker = prop_oneof![4 => Just(None), 6 => Just(Some("Ġ".to_string())), 6 => Just(Some("▁".to_string())),
                             1 => "[a▁]{0,2}".prop_map(Some)];
    let family = prop_oneof![Just(None), Just(Some(Family::ByteLevel)), Just(Some(Family::SentencePiece))];
    let special_ids = prop_oneof![8 => Just(vec![]), 2 => prop::collection::vec(0u32..4, 1..3), 1 => prop::collection::vec(0u32..11, 1..3)];
    let size = prop_oneof![1 => Just(0usize..1), 30 => Just(1usize..10)].prop_flat_map(|size| size);
    (size.prop_flat_map(|size| prop::collection::vec(token(), size)), marker, family, special_ids)
        .prop_map(|(tokens, marker, family, special_ids)| Side { tokens, marker, family, special_ids })
}

/// An id: a non-negative value is taken modulo the vocabulary's size (a valid
/// id), a negative one is `-1 - raw` as it is, rarely (any value, mostly invalid).
fn id() -> impl Strategy<Value = i64> {
    prop_oneof![200 => 0i64..1000, 1 => Just(-1), 1 => (0i64..14).prop_map(|raw| -1 - raw), 1 => Just(i64::MIN)]
}

/// The id that [`id`] drew, for a vocabulary of `size` tokens.
fn resolve(drawn: i64, size: usize) -> i64 {
    if drawn >= 0 {
        drawn % size.max(1) as i64
    } else if drawn == i64::MIN {
        i64::MAX
    } else {
        -1 - drawn
    }
}

/// A top-k id: mostly valid, sometimes an empty slot (-1) or out of range.
fn candidate() -> impl Strategy<Value = i64> {
    prop_oneof![100 => 0i64..1000, 6 => Just(-1_000_000), 1 => (0i64..14).prop_map(|raw| -1 - raw)]
}

fn logit() -> impl Strategy<Value = f32> {
    prop_oneof![400 => -30.0f32..30.0, 1 => Just(f32::NAN), 1 => Just(f32::INFINITY), 1 => Just(f32::NEG_INFINITY)]
}

fn shift() -> impl Strategy<Value = (usize, usize)> {
    prop_oneof![100 => Just((0, 0)), 1 => (0usize..3, 0usize..3), 1 => Just((usize::MAX, 1)), 1 => Just((0, usize::MAX))]
}

fn text(k: usize) -> impl Strategy<Value = Text> {
    (prop::collection::vec(id(), 0..14), prop::collection::vec(id(), 0..14), 0usize..2, shift(), shift())
        .prop_flat_map(move |(target, source, extra_rows, target_shift, source_shift)| {
            // Mostly one row per source token, sometimes one more or one fewer.
            let rows = (source.len() + extra_rows).saturating_sub(usize::from(extra_rows == 0 && source.len() % 5 == 4));
            (prop::collection::vec(candidate(), rows * k), prop::collection::vec(logit(), rows * k)).prop_map(
                move |(topk_ids, topk_logits)| Text {
                    target: target.clone(),
                    source: source.clone(),
                    topk_ids,
                    topk_logits,
                    target_shift,
                    source_shift,
                },
            )
        })
}

fn options() -> impl Strategy<Value = AlignOptions> {
    (
        prop_oneof![Just(VocabAlign::Soft), Just(VocabAlign::Hard)],
        prop_oneof![Just(OneHot::Next), Just(OneHot::Current)],
        prop_oneof![Just(Method::Dtw), Just(Method::Offsets), Just(Method::Boundary)],
        prop_oneof![Just(Candidates::Mined), Just(Candidates::Prefix)],
        prop_oneof![Just(Values::Logits), Just(Values::LogProbs)],
    )
        .prop_map(|(vocab_align, onehot, method, candidates, values)| AlignOptions {
            vocab_align,
            onehot,
            method,
            candidates,
            values,
        })
}

fn case() -> impl Strategy<Value = Case> {
    let normalize = prop_oneof![Just(Normalize::Marker), Just(Normalize::Bytes)];
    let special_pairs = prop_oneof![4 => Just(vec![]), 1 => prop::collection::vec((0u32..5, 0u32..5), 1..2)];
    (side(), side(), normalize, special_pairs, 0usize..4, any::<bool>(), options())
        .prop_flat_map(|(source, target, normalize, special_pairs, k, narrow, options)| {
            prop::collection::vec(text(k), 0..4).prop_map(move |texts| Case {
                source: source.clone(),
                target: target.clone(),
                normalize,
                special_pairs: special_pairs.clone(),
                texts,
                k,
                narrow,
                options,
            })
        })
}

/// Whether `Aligner::new` must accept the vocabularies of `case`.
fn vocabularies_are_valid(case: &Case) -> bool {
    let marker_ok = |side: &Side| match side.marker.as_deref() {
        Some(marker) => !marker.is_empty(),
        None => {
            let count = |m: &str| side.tokens.iter().filter(|t| t.contains(m)).count();
            count("▁") != count("Ġ")
        }
    };
    let (s, t) = (case.source.tokens.len() as u32, case.target.tokens.len() as u32);
    marker_ok(&case.source)
        && marker_ok(&case.target)
        && case.special_pairs.iter().all(|&(a, b)| a < s && b < t)
        && case.source.special_ids.iter().all(|&id| id < s)
        && case.target.special_ids.iter().all(|&id| id < t)
        && s > 0
        && t > 0
}

/// The flat buffers of a batch, each text's spans shifted as the case says.
struct Buffers {
    target_ids: Vec<i64>,
    target_starts: Vec<usize>,
    target_lengths: Vec<usize>,
    source_ids: Vec<i64>,
    source_starts: Vec<usize>,
    source_lengths: Vec<usize>,
    /// Per text.
    topk_ids: Vec<Vec<i64>>,
}

fn buffers(case: &Case) -> Buffers {
    let mut b = Buffers {
        target_ids: vec![],
        target_starts: vec![],
        target_lengths: vec![],
        source_ids: vec![],
        source_starts: vec![],
        source_lengths: vec![],
        topk_ids: vec![],
    };
    for text in &case.texts {
        b.target_starts.push(b.target_ids.len().wrapping_add(text.target_shift.0));
        b.target_lengths.push(text.target.len().wrapping_add(text.target_shift.1));
        b.target_ids.extend(text.target.iter().map(|&id| resolve(id, case.target.tokens.len())));
        b.source_starts.push(b.source_ids.len().wrapping_add(text.source_shift.0));
        b.source_lengths.push(text.source.len().wrapping_add(text.source_shift.1));
        b.source_ids.extend(text.source.iter().map(|&id| resolve(id, case.source.tokens.len())));
        b.topk_ids.push(text.topk_ids.iter().map(|&id| resolve(id, case.source.tokens.len())).collect());
    }
    b
}

/// Whether `align_batch` must accept the batch: every span inside its buffer,
/// every id inside its vocabulary, every listed candidate's logit finite.
fn batch_is_valid(case: &Case, b: &Buffers, k: usize) -> bool {
    let (s, t) = (case.source.tokens.len() as i64, case.target.tokens.len() as i64);
    let span = |start: usize, length: usize, len: usize| start.checked_add(length).is_some_and(|end| end <= len);
    case.texts.iter().enumerate().all(|(n, text)| {
        let (ts, tl, ss, sl) = (b.target_starts[n], b.target_lengths[n], b.source_starts[n], b.source_lengths[n]);
        span(ts, tl, b.target_ids.len())
            && span(ss, sl, b.source_ids.len())
            && sl.checked_mul(k).is_some_and(|slots| slots <= text.topk_ids.len())
            && b.target_ids[ts..ts + tl].iter().all(|&id| (0..t).contains(&id))
            && b.source_ids[ss..ss + sl].iter().all(|&id| (0..s).contains(&id))
            && b.topk_ids[n][..sl * k]
                .iter()
                .zip(&text.topk_logits)
                .all(|(&c, l)| c < s && (c < 0 || l.is_finite()))
    })
}

/// Aligns the buffers with top-k ids of type `C`.
fn align<C: TokenId>(aligner: &Aligner, b: &Buffers, topk_ids: Vec<&[C]>, topk_logits: Vec<&[f32]>, case: &Case)
                     -> Result<AlignedOutput, Error> {
    let input = BatchInput {
        target_ids: &b.target_ids,
        target_starts: &b.target_starts,
        target_lengths: &b.target_lengths,
        source_ids: &b.source_ids,
        source_starts: &b.source_starts,
        source_lengths: &b.source_lengths,
        topk_ids,
        topk_logits,
        k: case.k,
    };
    aligner.align_batch(&input, &case.options, Workers::ONE)
}

fn check(case: Case) -> Result<(), TestCaseError> {
    let vocabulary_options = VocabularyOptions {
        source_marker: case.source.marker.as_deref(),
        target_marker: case.target.marker.as_deref(),
        normalize: case.normalize,
        source_family: case.source.family,
        target_family: case.target.family,
        source_special_ids: &case.source.special_ids,
        target_special_ids: &case.target.special_ids,
        special_pairs: &case.special_pairs,
    };
    let aligner = Aligner::new(case.source.tokens.clone(), case.target.tokens.clone(), &vocabulary_options);
    prop_assert_eq!(aligner.is_ok(), vocabularies_are_valid(&case), "Aligner::new: {:?}", aligner.as_ref().err());
    let Ok(aligner) = aligner else {
        count(0);
        return Ok(());
    };
    let b = buffers(&case);
    // Top-k ids narrowed to int32 where they fit; an id that does not is out of any vocabulary either way.
    let narrow: Vec<Vec<i32>> = b
        .topk_ids
        .iter()
        .map(|ids| ids.iter().map(|&c| c.clamp(i32::MIN.into(), i32::MAX.into()) as i32).collect())
        .collect();
    let logits: Vec<&[f32]> = case.texts.iter().map(|text| text.topk_logits.as_slice()).collect();
    let result = if case.narrow {
        align(&aligner, &b, narrow.iter().map(Vec::as_slice).collect(), logits, &case)
    } else {
        align(&aligner, &b, b.topk_ids.iter().map(Vec::as_slice).collect(), logits, &case)
    };
    let valid = batch_is_valid(&case, &b, case.k);
    match result {
        Err(error) => {
            prop_assert!(!valid, "a valid batch failed: {error}");
            let is_invalid_value = matches!(error, Error::InvalidValue { .. } | Error::TooLarge { .. });
            prop_assert!(is_invalid_value, "unexpected error kind: {error:?}");
            count(1);
        }
        Ok(out) => {
            prop_assert!(valid, "an invalid batch was accepted");
            let (k_out, max_length) = (case.k.max(1), b.target_lengths.iter().copied().max().unwrap_or(0));
            prop_assert_eq!((out.batch, out.max_length, out.k_out), (case.texts.len(), max_length, k_out));
            prop_assert_eq!(out.ids.len(), out.batch * max_length * k_out);
            prop_assert_eq!(out.status.len(), out.batch * max_length);
            let target_size = case.target.tokens.len() as i32;
            prop_assert!(out.ids.iter().all(|&id| (-1..target_size).contains(&id)));
            prop_assert!(out.logits.iter().all(|l| !l.is_nan()));
            for (n, &length) in b.target_lengths.iter().enumerate() {
                let row = &out.status[n * max_length..(n + 1) * max_length];
                prop_assert!(row[..length].iter().all(|s| [status::EMPTY, status::MATCHED, status::ONEHOT].contains(s)));
                prop_assert!(row[length..].iter().all(|&s| s == status::PADDING));
            }
            let c = out.counts;
            prop_assert_eq!(c.positions, b.target_lengths.iter().sum::<usize>() as u64);
            prop_assert_eq!(c.matched + c.onehot + c.empty, c.positions);
            count(2);
        }
    }
    Ok(())
}

#[test]
fn align_inputs_never_panic_and_fail_only_when_invalid() {
    let seconds: Option<u64> = std::env::var("ALIGN_FUZZ_SECONDS").ok().map(|s| s.parse().expect("ALIGN_FUZZ_SECONDS: seconds"));
    let deadline = seconds.map(|s| Instant::now() + Duration::from_secs(s));
    let mut cases = 0u64;
    loop {
        // A fresh random seed every round; a failure prints the minimal case.
        let mut runner = TestRunner::new(Config { cases: ROUND, failure_persistence: None, ..Config::default() });
        if let Err(failure) = runner.run(&case(), check) {
            panic!("after {cases} cases: {failure}");
        }
        cases += u64::from(ROUND);
        if deadline.is_none_or(|d| Instant::now() >= d) {
            break;
        }
    }
    let [vocabularies, batches, aligned] = OUTCOMES.each_ref().map(|n| n.load(Ordering::Relaxed));
    println!(
        "align_inputs: {cases} cases, 0 failures, 0 panics ({vocabularies} vocabularies rejected, \
         {batches} batches rejected, {aligned} batches aligned)"
    );
    // Both outcomes must come up, or the strategies test nothing.
    assert!(batches > 0 && aligned > 0, "{batches} batches rejected, {aligned} aligned");
}
