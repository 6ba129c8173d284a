"""PackedBlocks: aligned rows read from disk block by block, as pack_examples cuts them at once."""

from __future__ import annotations

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
datasets = pytest.importorskip("datasets")

from fusion_data import random_example

from fusellm_fast.fusion_examples import pack_examples
from fusellm_fast.pipeline import PackedBlocks, PipelineError
from fusellm_fast.pipeline.storage import nested_array, save_atomically


def saved_rows(examples, directory):
    """The examples as the align stage saves them, read back memory-mapped."""
    table = {"text_index": pa.array(range(len(examples)), pa.int64())}
    table.update({key: nested_array([e[key] for e in examples])
                  for key in ("input_ids", "teacher_ids", "teacher_logits", "teacher_ce")})
    save_atomically(pa.table(table), directory)
    return datasets.load_from_disk(str(directory))


@pytest.mark.parametrize("level", ["sequence", "token", "text"])
@pytest.mark.parametrize("token_level_ce", [False, True])
def test_every_block_is_the_eager_packing(tmp_path, level, token_level_ce):
    rng = np.random.default_rng(5)
    examples = [random_example(rng, int(n), slots=3) for n in rng.integers(1, 15, size=20)]
    if token_level_ce:
        examples = [e | {"teacher_ce": rng.random((3, len(e["input_ids"]))).astype(np.float32)} for e in examples]
    rows = saved_rows(examples, tmp_path / "part")
    lazy = PackedBlocks(rows, block_size=7, level=level)
    eager = pack_examples(examples, block_size=7, level=level)
    assert len(lazy) == len(eager) > 0
    for index, block in enumerate(eager):
        for key, value in block.items():
            np.testing.assert_allclose(lazy[index][key], value, rtol=1e-6)
    with pytest.raises(IndexError):
        lazy[len(eager)]


def test_a_bad_block_size_names_the_flag(tmp_path):
    rows = saved_rows([random_example(np.random.default_rng(0), 4)], tmp_path / "part")
    with pytest.raises(PipelineError, match="--block-size: must be a positive int, got 0"):
        PackedBlocks(rows, block_size=0)
