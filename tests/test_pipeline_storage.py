"""The pipeline's storage: nested Arrow arrays and back, atomic saves, atomic text files."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")

from fusellm_fast.pipeline import storage
from fusellm_fast.pipeline.storage import nested_array, rectangular_array, save_atomically, write_text_atomically


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_nested_arrays_come_back_as_the_arrays(ndim):
    rng = np.random.default_rng(ndim)
    arrays = [rng.normal(size=tuple(rng.integers(0, 4, size=ndim))).astype(np.float32) for _ in range(12)]
    column = nested_array(arrays)
    assert len(column) == len(arrays)
    for array, cell in zip(arrays, column, strict=True):
        back = rectangular_array(cell)
        assert back.shape == array.shape or array.size == 0
        np.testing.assert_array_equal(back.reshape(array.shape), array)
    assert column.to_pylist() == [array.tolist() for array in arrays]


def test_a_scalar_cell_is_a_python_value():
    assert rectangular_array(pa.array([7], pa.int64())[0]) == 7


def test_save_atomically_replaces_the_destination_whole(tmp_path):
    datasets = pytest.importorskip("datasets")
    destination = tmp_path / "part-000000"
    save_atomically(pa.table({"x": [1, 2]}), destination)
    save_atomically(pa.table({"x": [3]}), destination)
    assert datasets.load_from_disk(str(destination))["x"] == [3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-000000"]


def test_write_text_atomically_leaves_no_scratch_file(tmp_path):
    path = tmp_path / "summary.json"
    write_text_atomically(path, "one\n")
    write_text_atomically(path, "two\n")
    assert path.read_text(encoding="utf-8") == "two\n"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_docstring_examples_run():
    results = doctest.testmod(storage)
    assert results.attempted > 0 and results.failed == 0
