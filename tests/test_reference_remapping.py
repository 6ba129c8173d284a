"""Tests of the reference's Step 3, ``align_text`` and ``align_batch``."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fusellm_fast.reference import (
    BYTE_LEVEL_MARKER as G,
    SENTENCEPIECE_MARKER as SP,
    STATUS_EMPTY,
    STATUS_MATCHED,
    STATUS_ONEHOT,
    align_batch,
    align_text,
)
from reference_examples import (
    SOURCE_VOCAB,
    SOURCE_VOCAB_IMAGES,
    TARGET_VOCAB,
    TEXT_SOURCE_IDS,
    TEXT_TARGET_IDS,
    TEXT_TOPK_IDS,
    TEXT_TOPK_LOGITS,
    align_example,
)


# --- align_text ----------------------------------------------------------------------------------


def test_align_text_hard():
    # Position 0: "Ġthe" -> "▁the" matches. Candidates: 1 Ġcat -> ▁cat (target 1) kept; 2 Ġcatz and
    # 3 Ġdig have no identical target string, dropped; -1 is an empty slot.
    # Position 1: "Ġcatz" -> "▁catz" is not "▁cat": not matched. Stand-in on the next target token,
    # but position 1 is the last one, so nothing.
    assert align_example(vocab_align="hard") == [
        (STATUS_MATCHED, [(1, 2.5)]),
        (STATUS_EMPTY, []),
    ]
    # With the published stand-in the last position gets its own token.
    assert align_example(vocab_align="hard", onehot="current") == [
        (STATUS_MATCHED, [(1, 2.5)]),
        (STATUS_ONEHOT, [(1, 1.0)]),
    ]


def test_align_text_soft():
    # Position 0: matched. Candidates through MinED: 1 -> 1 kept; 2 (Ġcatz) -> 1 again, dropped;
    # 3 (Ġdig) -> 2 kept; -1 skipped.
    # Position 1: "▁catz" is not "▁cat" but its MinED image is, so it matches. Candidates:
    # 5 -> 3, 0 -> 0, 4 -> 4, 3 -> 2, all distinct.
    expected = [
        (STATUS_MATCHED, [(1, 2.5), (2, 0.5)]),
        (STATUS_MATCHED, [(3, 3.0), (0, 2.0), (4, 1.0), (2, 0.25)]),
    ]
    assert align_example() == expected
    assert align_example(vocab_align="soft", vocab_map=SOURCE_VOCAB_IMAGES) == expected


def test_align_text_soft_uses_given_vocab_map():
    # A deliberately different map: every source id to target 3 ("s"). Position 0 still matches
    # (identical strings); position 1 no longer does ("▁catz" now maps to "s"), so it gets the
    # stand-in, which at the last position is empty.
    assert align_example(vocab_map=[3] * len(SOURCE_VOCAB)) == [
        (STATUS_MATCHED, [(3, 2.5)]),
        (STATUS_EMPTY, []),
    ]


def test_align_text_onehot_next_and_current():
    # Target "Ġthe Ġc at" against source "▁the ▁cat" (DTW worked out in test_dtw_hand_example):
    # Ġthe <- ▁the (matches), Ġc <- ▁cat and at <- ▁cat (neither matches "Ġcat").
    source_vocab = [SP + "the", SP + "cat"]
    target_vocab = [G + "the", G + "c", "at", G + "cat"]
    arguments = (
        source_vocab,
        target_vocab,
        [0, 1, 2],
        [0, 1],
        [[1, 0], [0, -1]],
        [[0.5, 0.25], [1.5, 9.0]],
    )
    markers = {"source_marker": SP, "target_marker": G, "vocab_align": "hard"}
    # Position 0's candidates: ▁cat -> Ġcat (3), ▁the -> Ġthe (0).
    assert align_text(*arguments, **markers, onehot="next") == [
        (STATUS_MATCHED, [(3, 0.5), (0, 0.25)]),
        (STATUS_ONEHOT, [(2, 1.0)]),
        (STATUS_EMPTY, []),
    ]
    assert align_text(*arguments, **markers, onehot="current") == [
        (STATUS_MATCHED, [(3, 0.5), (0, 0.25)]),
        (STATUS_ONEHOT, [(1, 1.0)]),
        (STATUS_ONEHOT, [(2, 1.0)]),
    ]


def test_align_text_several_sources_get_stand_in():
    # "▁a" and "b" both align with "Ġab" (see test_dtw_several_sources_on_one_target), so the only
    # target position gets the stand-in whatever the strings.
    arguments = ([SP + "a", "b"], [G + "ab", "b"], [0], [0, 1], [[1], [1]], [[1.0], [2.0]])
    markers = {"source_marker": SP, "target_marker": G}
    assert align_text(*arguments, **markers, onehot="current") == [(STATUS_ONEHOT, [(0, 1.0)])]
    assert align_text(*arguments, **markers, onehot="next") == [(STATUS_EMPTY, [])]


def test_align_text_byte_level_first_token_gains_marker():
    # A byte-level source writes the first word without a marker ("Hello"); the SentencePiece
    # target writes "▁Hello". At j = 0 the marker is prepended, so it matches in hard mode.
    source_vocab = ["Hello", G + "world"]
    target_vocab = [SP + "Hello", SP + "world"]
    arguments = (source_vocab, target_vocab, [0, 1], [0, 1], [[1], [0]], [[4.0], [3.0]])
    assert align_text(*arguments, source_marker=G, target_marker=SP, vocab_align="hard") == [
        (STATUS_MATCHED, [(1, 4.0)]),
        # "Hello" as a candidate is not "▁Hello", and the quirk does not touch candidates.
        (STATUS_EMPTY, []),
    ]


def test_align_text_marker_quirk_only_for_byte_level_source_and_first_position():
    # A SentencePiece source onto a byte-level target gets no such fix: "Hello" is not "ĠHello".
    arguments = (["Hello"], [G + "Hello"], [0], [0], [[0]], [[4.0]])
    assert align_text(
        *arguments, source_marker=SP, target_marker=G, vocab_align="hard", onehot="current"
    ) == [(STATUS_ONEHOT, [(0, 1.0)])]
    # At j = 1 the byte-level source's "Hello" is not fixed either.
    arguments = (
        [G + "x", "Hello"],
        [SP + "x", SP + "Hello"],
        [0, 1],
        [0, 1],
        [[0], [1]],
        [[1.0], [2.0]],
    )
    assert align_text(
        *arguments, source_marker=G, target_marker=SP, vocab_align="hard", onehot="current"
    ) == [(STATUS_MATCHED, [(0, 1.0)]), (STATUS_ONEHOT, [(1, 1.0)])]


def test_align_text_hard_maps_to_lowest_duplicate_and_drops_repeats():
    # Target ids 1 and 2 are both "▁b"; source ids 1 and 2 are both "Ġb". The candidate list
    # [2, 1, 0] maps to [1, 1, 0]: the repeated target 1 keeps its first logit.
    source_vocab = [G + "a", G + "b", G + "b"]
    target_vocab = [SP + "a", SP + "b", SP + "b"]
    assert align_text(
        source_vocab,
        target_vocab,
        [0],
        [0],
        [[2, 1, 0]],
        [[3.0, 2.0, 1.0]],
        source_marker=G,
        target_marker=SP,
        vocab_align="hard",
    ) == [(STATUS_MATCHED, [(1, 3.0), (0, 1.0)])]


def test_align_text_all_candidates_dropped_is_empty():
    # Matched, but no candidate string exists in the target vocabulary (or the slots are empty).
    assert align_text(
        [G + "a", G + "zz"],
        [SP + "a"],
        [0],
        [0],
        [[1, -1]],
        [[1.0, 0.0]],
        source_marker=G,
        target_marker=SP,
        vocab_align="hard",
    ) == [(STATUS_EMPTY, [])]


def test_align_text_empty_texts():
    markers = {"source_marker": G, "target_marker": SP}
    assert align_text(SOURCE_VOCAB, TARGET_VOCAB, [], [0], [[1]], [[1.0]], **markers) == []
    # No source tokens: nothing is aligned, every position gets the stand-in.
    assert align_text(SOURCE_VOCAB, TARGET_VOCAB, [0, 1], [], [], [], **markers) == [
        (STATUS_ONEHOT, [(1, 1.0)]),
        (STATUS_EMPTY, []),
    ]


def test_align_text_accepts_numpy_and_returns_python_numbers():
    result = align_text(
        SOURCE_VOCAB,
        TARGET_VOCAB,
        np.array(TEXT_TARGET_IDS, dtype=np.int64),
        np.array(TEXT_SOURCE_IDS, dtype=np.int32),
        np.array(TEXT_TOPK_IDS, dtype=np.int64),
        np.array(TEXT_TOPK_LOGITS, dtype=np.float32),
        source_marker=G,
        target_marker=SP,
    )
    assert result == align_example()
    for status, entries in result:
        assert type(status) is int
        for target_id, logit in entries:
            assert type(target_id) is int
            assert type(logit) is float


def test_align_text_keeps_logits_unchanged():
    logit = float(np.float32(0.1))  # not representable as a short decimal
    result = align_text(
        ["a"], ["a"], [0], [0], [[0]], [[np.float32(0.1)]], source_marker=SP, target_marker=G
    )
    assert result == [(STATUS_MATCHED, [(0, logit)])]
    nan_result = align_text(
        ["a"], ["a"], [0], [0], [[0]], [[math.nan]], source_marker=SP, target_marker=G
    )
    assert math.isnan(nan_result[0][1][0][1])


def test_align_text_does_not_mutate_inputs():
    inputs = [
        SOURCE_VOCAB,
        TARGET_VOCAB,
        TEXT_TARGET_IDS,
        TEXT_SOURCE_IDS,
        TEXT_TOPK_IDS,
        TEXT_TOPK_LOGITS,
    ]
    vocab_map = list(SOURCE_VOCAB_IMAGES)
    before = copy.deepcopy([*inputs, vocab_map])
    align_text(*inputs, source_marker=G, target_marker=SP, vocab_map=vocab_map)
    align_text(*inputs, source_marker=G, target_marker=SP, vocab_align="hard", onehot="current")
    assert [*inputs, vocab_map] == before


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"vocab_align": "fuzzy"}, "vocab_align"),
        ({"onehot": "previous"}, "onehot"),
        ({"target_ids": [0, 5]}, r"target_ids\[1\]"),
        ({"target_ids": [-1, 0]}, r"target_ids\[0\]"),
        ({"source_ids": [0, 6]}, r"source_ids\[1\]"),
        ({"topk_ids": [[1]]}, "topk_ids"),
        ({"topk_logits": [[1.0]] * 3}, "topk_logits"),
        ({"topk_logits": [[1.0, 2.0], [1.0]]}, r"topk_logits\[0\]"),
        (
            {"topk_ids": [[1, 6], [0, 0]], "topk_logits": [[1.0, 2.0], [1.0, 2.0]]},
            r"topk_ids\[0\]\[1\]",
        ),
        ({"vocab_map": [0, 1]}, "vocab_map"),
        ({"vocab_map": [0, 1, 1, 2, 4, 5]}, r"vocab_map\[5\]"),
        ({"source_marker": ""}, "source_marker"),
        ({"target_marker": ""}, "target_marker"),
    ],
)
def test_align_text_rejects_bad_arguments(changes, message):
    arguments = {
        "source_tokens": SOURCE_VOCAB,
        "target_tokens": TARGET_VOCAB,
        "target_ids": TEXT_TARGET_IDS,
        "source_ids": TEXT_SOURCE_IDS,
        "topk_ids": TEXT_TOPK_IDS,
        "topk_logits": TEXT_TOPK_LOGITS,
        "source_marker": G,
        "target_marker": SP,
        **changes,
    }
    with pytest.raises(ValueError, match=message):
        align_text(**arguments)


def test_align_text_rejects_non_numbers():
    markers = {"source_marker": G, "target_marker": SP}
    with pytest.raises(TypeError, match=r"source_ids\[0\]"):
        align_text(SOURCE_VOCAB, TARGET_VOCAB, [0], [0.0], [[1]], [[1.0]], **markers)
    with pytest.raises(TypeError, match=r"topk_logits\[0\]\[0\]"):
        align_text(SOURCE_VOCAB, TARGET_VOCAB, [0], [0], [[1]], [["1.0"]], **markers)


@given(
    st.lists(st.text("ab" + SP, min_size=1, max_size=3), min_size=1, max_size=5),
    st.data(),
)
@settings(max_examples=50)
def test_align_text_identical_tokenizers_keep_every_distribution(vocab, data):
    # Same vocabulary and tokenization on both sides: DTW is the diagonal, every position matches,
    # and both modes map each candidate to the lowest id with its string.
    ids = data.draw(st.lists(st.integers(0, len(vocab) - 1), max_size=6))
    candidate = st.integers(-1, len(vocab) - 1)
    topk_ids = data.draw(
        st.lists(st.lists(candidate, min_size=3, max_size=3), min_size=len(ids), max_size=len(ids))
    )
    topk_logits = [[float(10 * row + slot) for slot in range(3)] for row in range(len(ids))]
    lowest_id = {token: vocab.index(token) for token in vocab}
    expected = []
    for row_ids, row_logits in zip(topk_ids, topk_logits):
        entries = {}
        for c, logit in zip(row_ids, row_logits):
            if c >= 0:
                entries.setdefault(lowest_id[vocab[c]], logit)
        expected.append((STATUS_MATCHED if entries else STATUS_EMPTY, list(entries.items())))
    for vocab_align in ("soft", "hard"):
        result = align_text(
            vocab,
            vocab,
            ids,
            ids,
            topk_ids,
            topk_logits,
            source_marker=SP,
            target_marker=SP,
            vocab_align=vocab_align,
        )
        assert result == expected


# --- align_batch ---------------------------------------------------------------------------------


def test_align_batch_matches_align_text_per_text():
    texts = [
        (TEXT_TARGET_IDS, TEXT_SOURCE_IDS, TEXT_TOPK_IDS, TEXT_TOPK_LOGITS),
        ([4, 3], [4, 5], [[5, 2], [0, 1]], [[1.0, 0.5], [2.0, 1.5]]),
        ([], [], [], []),
    ]
    for options in ({}, {"vocab_align": "hard", "onehot": "current"}):
        batch = align_batch(
            SOURCE_VOCAB,
            TARGET_VOCAB,
            *map(list, zip(*texts)),
            source_marker=G,
            target_marker=SP,
            **options,
        )
        singles = [
            align_text(
                SOURCE_VOCAB, TARGET_VOCAB, *text, source_marker=G, target_marker=SP, **options
            )
            for text in texts
        ]
        assert batch == singles
        assert batch[0] == align_example(**options)


def test_align_batch_rejects_bad_arguments():
    markers = {"source_marker": G, "target_marker": SP}
    with pytest.raises(ValueError, match="source_ids"):
        align_batch(SOURCE_VOCAB, TARGET_VOCAB, [[0]], [], [], [], **markers)
    with pytest.raises(ValueError, match=r"text 1: target_ids\[0\]"):
        align_batch(
            SOURCE_VOCAB,
            TARGET_VOCAB,
            [[0], [9]],
            [[0], [0]],
            [[[1]], [[1]]],
            [[[1.0]], [[1.0]]],
            **markers,
        )
    with pytest.raises(ValueError, match="vocab_align"):
        align_batch(SOURCE_VOCAB, TARGET_VOCAB, [], [], [], [], vocab_align="fuzzy", **markers)
