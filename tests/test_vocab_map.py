"""VocabMap files: round trips, damaged files, and maps of other vocabularies."""

from __future__ import annotations

import numpy as np
import pytest

import fusellm_fast as ff

from boundary import (
    BATCH, N_SOURCE, N_TARGET, SOURCE_TOKENS, TARGET_TOKENS, align, assert_same_result, expected,
)


@pytest.fixture(scope="module")
def vocab_map() -> ff.VocabMap:
    return ff.VocabMap.build(SOURCE_TOKENS, TARGET_TOKENS, workers=1)


@pytest.mark.parametrize("as_str", [False, True], ids=["Path", "str"])
def test_vocab_map_round_trip(vocab_map, tmp_path, as_str, expected):
    path = tmp_path / "map.npz"
    vocab_map.save(str(path) if as_str else path)
    loaded = ff.VocabMap.load(str(path) if as_str else path)
    assert loaded == vocab_map
    assert loaded.target_ids.dtype == np.int32 and loaded.distances.dtype == np.int32
    aligner = ff.Aligner(SOURCE_TOKENS, TARGET_TOKENS, vocab_map=loaded)
    assert aligner.vocab_map is loaded
    assert_same_result(align(BATCH, aligner=aligner), expected)
    lazy = ff.Aligner(SOURCE_TOKENS, TARGET_TOKENS)
    assert lazy.vocab_map is None
    assert_same_result(align(BATCH, aligner=lazy), expected)
    assert lazy.vocab_map == vocab_map


def map_fields(vocab_map: ff.VocabMap) -> dict:
    return {"format_version": np.int64(1), "target_ids": vocab_map.target_ids, "distances": vocab_map.distances,
            "source_marker": np.str_(vocab_map.source_marker), "target_marker": np.str_(vocab_map.target_marker),
            "source_fingerprint": np.str_(vocab_map.source_fingerprint),
            "target_fingerprint": np.str_(vocab_map.target_fingerprint)}


def write_npz(path, **fields) -> None:
    with open(path, "wb") as f:
        np.savez(f, **fields)


def write_npy(path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # through a file, as np.save would add ".npy" to the name
        np.save(f, array)


def write_valid_then(damage):
    def write(path, vocab_map):
        vocab_map.save(path)
        data = bytearray(path.read_bytes())
        path.write_bytes(bytes(damage(data)))
    return write


def write_with(**changes):
    def write(path, vocab_map):
        fields = {**map_fields(vocab_map), **changes}
        write_npz(path, **{k: v for k, v in fields.items() if v is not None})
    return write


CORRUPT_FILES = {
    "random bytes": lambda path, _: path.write_bytes(np.random.default_rng(5).bytes(300)),
    "empty file": lambda path, _: path.write_bytes(b""),
    "truncated": write_valid_then(lambda data: data[: len(data) // 2]),
    "flipped bytes": write_valid_then(lambda data: data[:100] + bytes(b ^ 0xFF for b in data[100:160]) + data[160:]),
    "missing distances": write_with(distances=None),
    "missing fingerprint": write_with(source_fingerprint=None),
    "other format version": write_with(format_version=np.int64(2)),
    "format version not a number": write_with(format_version=np.str_("one")),
    "float target ids": write_with(target_ids=np.zeros(N_SOURCE, np.float64)),
    "2-D distances": write_with(distances=np.zeros((N_SOURCE, 1), np.int32)),
    "fewer distances": write_with(distances=np.zeros(N_SOURCE - 1, np.int32)),
    "negative target id": write_with(target_ids=np.full(N_SOURCE, -1, np.int32)),
    "a single .npy array": lambda path, vocab_map: write_npy(path, vocab_map.target_ids),
}


@pytest.mark.parametrize("write", CORRUPT_FILES.values(), ids=CORRUPT_FILES.keys())
def test_corrupt_vocab_map_file_raises_vocab_map_error(write, vocab_map, tmp_path):
    path = tmp_path / "map.npz"
    write(path, vocab_map)
    with pytest.raises(ff.VocabMapError, match="^path: "):
        ff.VocabMap.load(path)


def test_missing_vocab_map_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        ff.VocabMap.load(tmp_path / "absent.npz")


OTHER_MAPS = {
    "other source vocabulary": lambda: ff.VocabMap.build(SOURCE_TOKENS[:-1] + ["zz"], TARGET_TOKENS),
    "other target vocabulary": lambda: ff.VocabMap.build(SOURCE_TOKENS, TARGET_TOKENS + ["zz"]),
    "other marker": lambda: ff.VocabMap.build(SOURCE_TOKENS, TARGET_TOKENS, source_marker="Z"),
}


@pytest.mark.parametrize("make_map", OTHER_MAPS.values(), ids=OTHER_MAPS.keys())
def test_map_of_other_vocabularies_raises_vocab_map_error(make_map, tmp_path):
    path = tmp_path / "map.npz"
    make_map().save(path)
    with pytest.raises(ff.VocabMapError, match="^vocab_map: "):
        ff.Aligner(SOURCE_TOKENS, TARGET_TOKENS, vocab_map=ff.VocabMap.load(path))


def test_map_with_ids_outside_target_vocabulary_raises_vocab_map_error(vocab_map, tmp_path):
    # The fingerprints fit, so only the check of the ids themselves can catch this.
    path = tmp_path / "map.npz"
    write_with(target_ids=np.full(N_SOURCE, N_TARGET, np.int32))(path, vocab_map)
    tampered = ff.VocabMap.load(path)
    with pytest.raises(ff.VocabMapError, match="vocab_map"):
        ff.Aligner(SOURCE_TOKENS, TARGET_TOKENS, vocab_map=tampered)
