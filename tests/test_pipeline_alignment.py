"""The align stage: the vocabulary map is built where it is needed, by align_batch, and reported."""

from __future__ import annotations

from pathlib import Path

import pytest

for module in ("torch", "transformers", "datasets"):
    pytest.importorskip(module)

from demo_models import TINY, demo_corpus, save_models
from fusellm_fast import VocabMap, pipeline
from fusellm_fast.hf import tokenizer_vocabulary
from fusellm_fast.pipeline import PipelineError


@pytest.fixture(scope="module")
def passes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Teacher passes of a target and a source with different tokenizers over the same texts."""
    root = tmp_path_factory.mktemp("align")
    corpus = demo_corpus(TINY, 12)
    paths = save_models(root, corpus, TINY, [("target", "sp_bpe", "llama", 260), ("source", "byte_bpe", "gpt2", 260)])
    for name in ("target", "source"):
        pipeline.extract(paths[name], [], root / f"teacher-{name}", texts=corpus, top_k=4, max_length=300,
                         show_progress=False)
    paths["root"] = root
    return paths


def align(passes: dict[str, Path], name: str, **options) -> dict:
    root = passes["root"]
    summary = pipeline.align(root / "teacher-target", [root / "teacher-source"], root / name, show_progress=False,
                             batch_texts=10, **options)
    return summary.sources[0]


def test_soft_mode_reports_the_map_that_align_batch_built(passes):
    from transformers import AutoTokenizer

    vocabularies = [tokenizer_vocabulary(AutoTokenizer.from_pretrained(passes[name]), name)
                    for name in ("source", "target")]
    expected = VocabMap.build(*vocabularies).exact_share
    for options in ({}, {"method": "offsets"}, {"method": "boundary", "candidates": "mined"}):
        report = align(passes, "soft-" + "-".join(options.values()), **options)
        assert report["vocab_map_exact_share"] == pytest.approx(expected)
        assert 0 < report["matched_rate"] <= 1


@pytest.mark.parametrize("options", [{"vocab_align": "hard"}, {"method": "boundary", "candidates": "prefix"}])
def test_no_map_is_built_where_none_is_needed(passes, options):
    assert align(passes, "-".join(options.values()), **options)["vocab_map_exact_share"] is None


def test_a_given_map_is_used_and_checked(passes):
    root = passes["root"]
    summary = pipeline.build_vocab_map(passes["source"], passes["target"], root / "map.npz")
    assert align(passes, "given-map", vocab_maps=[root / "map.npz"])["vocab_map_exact_share"] == summary.exact_share
    pipeline.build_vocab_map(passes["target"], passes["source"], root / "reversed.npz")
    with pytest.raises(PipelineError, match="--vocab-map: .*reversed.npz"):
        align(passes, "bad-map", vocab_maps=[root / "reversed.npz"])
    with pytest.raises(PipelineError, match="--vocab-map: got 2 maps for 1 sources"):
        align(passes, "two-maps", vocab_maps=[root / "map.npz", root / "map.npz"])
