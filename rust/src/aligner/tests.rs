//! The aligner on small vocabularies, one behaviour at a time.

use super::*;
use crate::aligner::batch::status;
use crate::aligner::options::{Method, OneHot};
use crate::limits::MAX_TEXT_TOKENS;


fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn markers<'a>(source_marker: Option<&'a str>, target_marker: Option<&'a str>) -> VocabularyOptions<'a> {
    VocabularyOptions { source_marker, target_marker, ..VocabularyOptions::default() }
}

/// One text: target `▁the ▁cat` (ids 0, 1), source `Ġthe Ġc at` (ids 0, 2, 3).
fn run(vocab_align: VocabAlign, onehot: OneHot) -> AlignedOutput {
    let aligner = Aligner::new(strings(&["Ġthe", "Ġcat", "Ġc", "at"]), strings(&["▁the", "▁cat", "▁dog"]), &VocabularyOptions::default())
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
    let options = AlignOptions { vocab_align, onehot, ..AlignOptions::default() };
    aligner.align_batch(&input, &options, Workers::ONE).unwrap()
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
    let aligner = Aligner::new(strings(&["Ġa"]), strings(&["▁a"]), &VocabularyOptions::default()).unwrap();
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
    let err = aligner.align_batch(&input, &AlignOptions { vocab_align: VocabAlign::Hard, ..AlignOptions::default() }, Workers::ONE).unwrap_err();
    assert_eq!(err.to_string(), "target_ids: text 0, position 1: id 5 is outside the vocabulary (size 1)");
}

/// Aligns one text (source marker `Ġ`, target `▁`) with every source
/// position's top-1 candidate being source id `candidate`, so a position's
/// status shows whether it was paired.
fn by_bytes(source: &[&str], target: &[&str], source_text: &[i64], target_text: &[i64], candidate: i64,
            method: Method, candidates: Candidates) -> AlignedOutput {
    let aligner = Aligner::new(strings(source), strings(target), &markers(Some("Ġ"), Some("▁"))).unwrap();
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
    let options = AlignOptions { vocab_align: VocabAlign::Hard, onehot: OneHot::Next, method, candidates, ..AlignOptions::default() };
    let out = aligner.align_batch(&input, &options, Workers::new(2).unwrap()).unwrap();
    assert_eq!(aligner.align_batch(&input, &options, Workers::ONE).unwrap(), out, "serial and pooled runs differ");
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
    let aligner = Aligner::new(
        strings(&source),
        strings(&target),
        &VocabularyOptions { source_special_ids: &[0], special_pairs: &[(0, 0)], ..VocabularyOptions::default() },
    )
    .unwrap();
    assert_eq!(aligner.prefix_map(Workers::ONE).unwrap(), &[0, 1]);
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
        ..AlignOptions::default()
    };
    let out = aligner.align_batch(&input, &options, Workers::ONE).unwrap();
    assert_eq!(out.status, vec![O, M]);
}

#[test]
fn identical_tokenizers_keep_every_distribution() {
    let vocab = strings(&["Ġthe", "Ġcat", "Ġc", "at", "Ã", "©"]);
    let aligner = Aligner::new(vocab.clone(), vocab, &VocabularyOptions::default()).unwrap();
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
            let options = AlignOptions { vocab_align: VocabAlign::Soft, onehot: OneHot::Next, method, candidates, ..AlignOptions::default() };
            let out = aligner.align_batch(&input, &options, Workers::ONE).unwrap();
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
    let aligner = Aligner::new(source, target, &VocabularyOptions::default()).unwrap();
    assert_eq!(aligner.prefix_map(Workers::ONE).unwrap(), &[0, 0, 0, -1]);
}

/// One text of target `▁a ▁a` and source `Ġa`, one top-k row of `Ġa`, with the
/// given target start, lengths and candidate width, aligned with the published options.
fn sized(target_start: usize, target_length: usize, source_length: usize, k: usize) -> Result<AlignedOutput> {
    let aligner = Aligner::new(strings(&["Ġa"]), strings(&["▁a"]), &VocabularyOptions::default()).unwrap();
    let (target_starts, target_lengths, source_lengths) = ([target_start], [target_length], [source_length]);
    let input = BatchInput { target_starts: &target_starts, target_lengths: &target_lengths, source_lengths: &source_lengths,
                             k, ..one_text(&[0, 0], &[0], &[0], &[0.0], 1) };
    aligner.align_batch(&input, &AlignOptions::default(), Workers::ONE)
}

/// One text of the given ids and `[rows, k]` top-k lists.
fn one_text<'a>(target: &'a [i64], source: &'a [i64], topk_ids: &'a [i64], topk_logits: &'a [f32], k: usize)
                -> BatchInput<'a, i64, i64> {
    BatchInput {
        target_ids: target,
        target_starts: &[0],
        target_lengths: std::slice::from_ref(LENGTHS.get(target.len()).expect("a short text")),
        source_ids: source,
        source_starts: &[0],
        source_lengths: std::slice::from_ref(LENGTHS.get(source.len()).expect("a short text")),
        topk_ids: vec![topk_ids],
        topk_logits: vec![topk_logits],
        k,
    }
}

/// Lengths to borrow from for `one_text`'s one-text batches.
static LENGTHS: [usize; 8] = [0, 1, 2, 3, 4, 5, 6, 7];

#[test]
fn overflowing_offsets_and_lengths_are_errors() {
    assert!(sized(0, 2, 0, 1).is_ok());
    let past_the_end = |arg: &str| format!("{arg}: text 0 reaches past the end of the array");
    assert_eq!(sized(usize::MAX, 2, 0, 1).unwrap_err().to_string(), past_the_end("target_ids"));
    assert_eq!(sized(0, 2, 1, usize::MAX).unwrap_err().to_string(), past_the_end("source_topk_ids"));
    let err = sized(0, MAX_TEXT_TOKENS + 1, 0, 1).unwrap_err();
    assert_eq!(err, Error::TooLarge { arg: "target_ids", msg: "text 0 has 2147483648 tokens, more than the 2147483647 supported".into() });
    assert!(matches!(sized(0, 2, usize::MAX, 0), Err(Error::TooLarge { arg: "source_ids", .. })));
}

#[test]
fn outputs_too_large_for_memory_are_errors() {
    // Without source rows the candidates' width costs no input memory, only output.
    for k in [1usize << 40, 1 << 61, usize::MAX] {
        let err = sized(0, 2, 0, k).unwrap_err();
        assert!(matches!(err, Error::TooLarge { arg: "source_topk_ids", .. }), "k = {k}: {err}");
    }
}

#[test]
fn lists_of_no_candidates_leave_matched_positions_empty() {
    let aligner = Aligner::new(strings(&["Ġthe", "Ġcat"]), strings(&["▁the", "▁cat"]), &VocabularyOptions::default()).unwrap();
    let input = one_text(&[0, 1], &[0, 1], &[], &[], 0);
    for method in [Method::Dtw, Method::Offsets, Method::Boundary] {
        for candidates in [Candidates::Mined, Candidates::Prefix] {
            let options = AlignOptions { method, candidates, ..AlignOptions::default() };
            let out = aligner.align_batch(&input, &options, Workers::ONE).unwrap();
            assert_eq!((out.ids, out.status), (vec![-1, -1], vec![E, E]), "{method:?}, {candidates:?}");
        }
    }
}
