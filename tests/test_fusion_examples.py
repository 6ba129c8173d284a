"""Fusion examples: built from teacher rows and aligned lists, and packed into blocks."""

from __future__ import annotations

import doctest

from types import SimpleNamespace

import numpy as np
import pytest
from fusion_data import BLOCK, MODELS, aligned_batch, random_example, teacher_row

from fusellm_fast import fusion_examples
from fusellm_fast.errors import InvalidInputError
from fusellm_fast.fusion_examples import build_fusion_examples, pack_examples


def test_build_fusion_examples_stacks_target_and_aligned_sources():
    rng = np.random.default_rng(0)
    lengths = [5, 3]
    target = [teacher_row(rng, n, slots=2, num_bytes=8 * n) for n in lengths]
    sources = [aligned_batch(rng, lengths, slots=3), aligned_batch(rng, lengths, slots=1)]
    source_rows = [[teacher_row(rng, n + 1, slots=3) for n in lengths] for _ in sources]
    copies = [{key: np.copy(value) for key, value in row.items()} for row in target]
    examples = build_fusion_examples(target, sources, source_rows)
    by_byte = build_fusion_examples(target, sources, source_rows, ce_unit="byte")
    for b, (example, length) in enumerate(zip(examples, lengths, strict=True)):
        assert example["input_ids"].tolist() == target[b]["input_ids"].tolist()
        assert example["teacher_ids"].shape == (3, length, 3) and example["teacher_ids"].dtype == np.int32
        np.testing.assert_array_equal(example["teacher_ids"][0, :, :2], target[b]["topk_ids"])
        np.testing.assert_array_equal(example["teacher_ids"][0, :, 2], -1)
        np.testing.assert_array_equal(example["teacher_logits"][1], sources[0].logits[b, :length])
        np.testing.assert_array_equal(example["teacher_ids"][2, :, :1], sources[1].ids[b, :length])
        np.testing.assert_array_equal(example["teacher_ids"][2, :, 1:], -1)
        rows = [target[b]] + [per_source[b] for per_source in source_rows]
        np.testing.assert_allclose(example["teacher_ce"], [row["ce"] for row in rows], rtol=1e-6)
        per_byte = [row["total_ce"] / row["num_bytes"] for row in rows]
        np.testing.assert_allclose(by_byte[b]["teacher_ce"], per_byte, rtol=1e-6)
    for row, copy in zip(target, copies, strict=True):
        assert all(np.array_equal(row[key], copy[key]) for key in copy)


def test_build_fusion_examples_reads_a_datasets_dataset():
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(10)
    rows = [teacher_row(rng, 4, slots=2), teacher_row(rng, 6, slots=2)]
    as_dataset = datasets.Dataset.from_list(rows)
    sources = [aligned_batch(rng, [4, 6], slots=2)]
    from_lists = build_fusion_examples(rows, sources, [rows])
    from_dataset = build_fusion_examples(as_dataset, sources, [as_dataset])
    for expected, example in zip(from_lists, from_dataset, strict=True):
        for key in expected:
            np.testing.assert_allclose(example[key], expected[key], rtol=1e-6)


def test_build_fusion_examples_rejects_mismatches():
    rng = np.random.default_rng(1)
    target = [teacher_row(rng, 4, slots=2)]
    good = aligned_batch(rng, [4], slots=2)
    source_rows = [[teacher_row(rng, 4, slots=2)]]
    with pytest.raises(InvalidInputError, match=r"aligned_sources\[0\]: row 0 has length 3"):
        build_fusion_examples(target, [aligned_batch(rng, [3], slots=2)], source_rows)
    with pytest.raises(InvalidInputError, match="one entry per source"):
        build_fusion_examples(target, [good], [])
    with pytest.raises(InvalidInputError, match=r"source_rows\[0\]: has 2 texts"):
        build_fusion_examples(target, [good], [source_rows[0] * 2])
    with pytest.raises(InvalidInputError, match=r"aligned_sources\[0\]: has 2 texts"):
        build_fusion_examples(target, [aligned_batch(rng, [4, 4], slots=2)], source_rows)
    with pytest.raises(InvalidInputError, match=r"target_rows\[0\]: lacks \['total_ce', 'num_bytes'\]"):
        build_fusion_examples(
            [{"input_ids": [1], "topk_ids": [[1]], "topk_logits": [[0.0]], "ce": 1.0}], [good], source_rows
        )
    with pytest.raises(InvalidInputError, match="ce_unit"):
        build_fusion_examples(target, [good], source_rows, ce_unit="char")


@pytest.mark.parametrize("drop_remainder", [True, False])
@pytest.mark.parametrize("level", ["sequence", "token"])
def test_pack_examples_concatenates_with_block_or_document_ce(drop_remainder, level):
    rng = np.random.default_rng(2)
    lengths = [5, 9, 3, 7, 2]
    examples = [random_example(rng, n, slots=3 if i % 2 else 2) for i, n in enumerate(lengths)]
    copies = [{key: value.copy() for key, value in example.items()} for example in examples]
    blocks = pack_examples(examples, block_size=BLOCK, level=level, drop_remainder=drop_remainder)

    total = sum(lengths)
    assert len(blocks) == (total // BLOCK if drop_remainder else -(-total // BLOCK))
    document = np.repeat(np.arange(len(lengths)), lengths)
    all_ids = np.concatenate([example["input_ids"] for example in examples])
    for index, block in enumerate(blocks):
        start = index * BLOCK
        span = slice(start, min(start + BLOCK, total))
        np.testing.assert_array_equal(block["input_ids"], all_ids[span])
        assert block["teacher_ids"].shape == (MODELS, len(all_ids[span]), 3)
        if level == "sequence":  # the reference: the token-weighted mean of the documents' CEs
            documents, counts = np.unique(document[span], return_counts=True)
            weighted = sum(c * examples[d]["teacher_ce"] for d, c in zip(documents, counts, strict=True))
            np.testing.assert_allclose(block["teacher_ce"], weighted / counts.sum(), rtol=1e-6)
        else:  # every position keeps its own document's CE
            expected_ce = np.stack([examples[d]["teacher_ce"] for d in document[span]], axis=1)
            np.testing.assert_array_equal(block["teacher_ce"], expected_ce)
        # Token positions keep their own teacher lists; narrower lists are widened with empty slots.
        position = start
        doc, offset = document[position], position - sum(lengths[: document[position]])
        own = examples[doc]["teacher_ids"][:, offset]
        np.testing.assert_array_equal(block["teacher_ids"][:, 0, : own.shape[-1]], own)
        np.testing.assert_array_equal(block["teacher_ids"][:, 0, own.shape[-1] :], -1)
    for example, copy in zip(examples, copies, strict=True):
        assert all(np.array_equal(example[key], copy[key]) for key in copy)


def test_pack_examples_rejects_bad_input():
    rng = np.random.default_rng(3)
    with pytest.raises(InvalidInputError, match="block_size"):
        pack_examples([random_example(rng, 4)], block_size=0)
    with pytest.raises(InvalidInputError, match="disagree on the number of models"):
        pack_examples([random_example(rng, 4), random_example(rng, 4, models=2)], block_size=4)
    with pytest.raises(InvalidInputError, match=r"examples\[0\]: lacks \['teacher_ce'\]"):
        without_ce = {key: value for key, value in random_example(rng, 4).items() if key != "teacher_ce"}
        pack_examples([without_ce], block_size=4)
    with pytest.raises(InvalidInputError, match="level: must be one of"):
        pack_examples([random_example(rng, 4)], block_size=4, level="document")
    with pytest.raises(InvalidInputError, match=r"mix CE layouts \['sequence', 'token'\]"):
        token_level = random_example(rng, 4) | {"teacher_ce": np.ones((MODELS, 4), np.float32)}
        pack_examples([random_example(rng, 4), token_level], block_size=4)
    assert pack_examples([], block_size=4) == []


def test_pack_examples_averages_token_level_ce_over_a_block():
    rng = np.random.default_rng(13)
    token_ce = rng.random((MODELS, 8)).astype(np.float32)
    example = random_example(rng, 8) | {"teacher_ce": token_ce}
    blocks = pack_examples([example], block_size=4)
    np.testing.assert_allclose(blocks[1]["teacher_ce"], token_ce[:, 4:].mean(axis=1), rtol=1e-6)
    np.testing.assert_array_equal(
        pack_examples([example], block_size=4, level="token")[1]["teacher_ce"], token_ce[:, 4:]
    )


def test_min_ce_per_byte_picks_the_model_with_the_lowest_ce_per_byte():
    torch = pytest.importorskip("torch")
    from fusellm_fast.fusion import fuse

    # The target splits 12 bytes into 6 tokens with total CE 6.0 (1.0 per token, 0.5 per byte);
    # the source splits them into 3 tokens with total CE 4.5 (1.5 per token, 0.375 per byte).
    # Per token the target wins; per byte the source does.
    rng = np.random.default_rng(3)
    target = teacher_row(rng, 4, slots=2, num_bytes=12) | {"ce": 1.0, "total_ce": 6.0}
    source = teacher_row(rng, 3, slots=2, num_bytes=12) | {"ce": 1.5, "total_ce": 4.5}
    aligned = aligned_batch(rng, [4], slots=2)
    for ce_unit, expected_ce, chosen in (("token", [1.0, 1.5], 0), ("byte", [0.5, 0.375], 1)):
        example = build_fusion_examples([target], [aligned], [[source]], ce_unit=ce_unit)[0]
        np.testing.assert_allclose(example["teacher_ce"], expected_ce, rtol=1e-6)
        fused = fuse([(example["teacher_ids"][m][None], example["teacher_logits"][m][None]) for m in range(2)],
                     torch.as_tensor(example["teacher_ce"])[:, None], method="min_ce")
        assert fused.weights[:, 0].tolist() == [float(m == chosen) for m in range(2)]


def test_token_level_ce_is_carried_over_through_the_alignment():
    # Source position i holds the CE of source token i + 1; the alignment pairs target positions
    # 1 and 2 with source positions 0 and 1 (source_positions). Target positions without a pair,
    # and positions that predict nothing (the last), take the text's CE.
    target = {"input_ids": np.array([1, 2, 3], np.int32), "topk_ids": np.zeros((3, 1), np.int32),
              "topk_logits": np.zeros((3, 1), np.float32), "token_ce": np.array([0.8, 1.2], np.float32),
              "ce": 1.0, "total_ce": 2.0, "num_bytes": 5}
    source = {"input_ids": np.array([4, 5], np.int32), "topk_ids": np.zeros((2, 1), np.int32),
              "topk_logits": np.zeros((2, 1), np.float32), "token_ce": np.array([0.6], np.float32),
              "ce": 0.6, "total_ce": 0.6, "num_bytes": 5}
    aligned = SimpleNamespace(ids=np.zeros((1, 3, 1), np.int32), logits=np.zeros((1, 3, 1), np.float32),
                              lengths=np.array([3]), source_positions=np.array([[-1, 0, 1]], np.int32))
    by_token = build_fusion_examples([target], [aligned], [[source]], ce_level="token")[0]["teacher_ce"]
    # Source position 1 is the last: it predicts nothing, so the text's CE stands in.
    np.testing.assert_allclose(by_token, [[0.8, 1.2, 1.0], [0.6, 0.6, 0.6]], rtol=1e-6)
    # Per byte: each token's CE over the bytes of the token it predicts (ids 2, 3: 2 and 1 bytes;
    # id 5: 2 bytes); texts' CE per byte where there is no token.
    lengths = [np.array([0, 0, 2, 1, 3, 2]), np.array([0, 0, 2, 1, 3, 2])]
    by_byte = build_fusion_examples([target], [aligned], [[source]], ce_level="token", ce_unit="byte",
                                    byte_lengths=lengths)[0]["teacher_ce"]
    np.testing.assert_allclose(by_byte, [[0.4, 1.2, 0.4], [0.12, 0.3, 0.12]], rtol=1e-6)
    with pytest.raises(InvalidInputError, match="byte_lengths"):
        build_fusion_examples([target], [aligned], [[source]], ce_level="token", ce_unit="byte")
    with pytest.raises(InvalidInputError, match="ce_level"):
        build_fusion_examples([target], [aligned], [[source]], ce_level="word")


def test_docstring_examples_run():
    results = doctest.testmod(fusion_examples)
    assert results.attempted > 0 and results.failed == 0
