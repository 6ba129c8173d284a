"""Training straight from teacher passes: the texts of each block aligned on the fly give what
training from `align`'s output gives, adding a source writes only into that source's directory,
and the compact (float16) store fuses like a float32 one."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("datasets")

from demo_models import TINY, demo_corpus, save_models
from fusellm_fast import pipeline
from fusellm_fast.fusion import fuse
from fusellm_fast.pipeline import AlignmentOptions, PackedBlocks, PipelineError, open_teacher_passes
from fusellm_fast.trainer import FusionCollator

BLOCK = 32
MODELS = [("target", "sp_bpe", "llama", 300), ("a", "byte_bpe", "gpt2", 260), ("b", "sp_bpe", "llama", 280),
          ("c", "byte_bpe", "gpt2", 320)]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Models of four tokenizers and the teacher passes of the target, a and b over one corpus."""
    root = tmp_path_factory.mktemp("fly")
    corpus = demo_corpus(TINY, 10)
    paths = save_models(root / "models", corpus, TINY, MODELS)
    (root / "corpus.json").write_text(json.dumps(corpus))
    for name in ("target", "a", "b"):
        extract(root, paths[name], name)
    return {"root": root, **paths}


def extract(root: Path, model: Path, name: str, **options) -> Path:
    output = root / options.pop("directory", f"teacher-{name}")
    pipeline.extract(model, [], output, texts=json.loads((root / "corpus.json").read_text()), top_k=4,
                     max_length=200, chunk_texts=8, show_progress=False, **options)
    return output


def passes(workspace: dict[str, Path], *names: str) -> dict:
    root = workspace["root"]
    return {"target_pass": root / "teacher-target", "source_passes": [root / f"teacher-{n}" for n in names]}


def train(workspace: dict[str, Path], aligned: Path | None, name: str, **options) -> list[float]:
    options = {"max_steps": 3, "block_size": BLOCK, "batch_size": 2, "logging_steps": 1, "learning_rate": 3e-3,
               "warmup_ratio": 0.0, "seed": 0, **options}
    summary = pipeline.train(workspace["target"], aligned, workspace["root"] / name, show_progress=False, **options)
    return [entry["loss"] for entry in summary.log_history]


SETTINGS = [
    {},
    {"method": "offsets", "normalize": "bytes", "ce_unit": "byte"},
    {"method": "boundary", "candidates": "prefix", "ce_level": "token", "ce_unit": "byte", "onehot": "current"},
    {"method": "dtw", "vocab_align": "hard", "ce_level": "token"},
    {"method": "boundary", "candidates": "mined", "normalize": "bytes"},
]


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: "-".join(s.values()) or "defaults")
def test_on_the_fly_alignment_trains_like_aligned_data(workspace, setting):
    root = workspace["root"]
    name = "-".join(setting.values()) or "defaults"
    teachers = passes(workspace, "a", "b")
    pipeline.align(teachers["target_pass"], teachers["source_passes"], root / f"aligned-{name}", batch_texts=7,
                   show_progress=False, **setting)
    alignment = AlignmentOptions(**setting)
    level = alignment.ce_level
    stored = PackedBlocks(pipeline.load_aligned(root / f"aligned-{name}", arg="ALIGNED_DIR")[0], block_size=BLOCK,
                          level=level)
    flying = PackedBlocks(open_teacher_passes(teachers["target_pass"], teachers["source_passes"], alignment),
                          block_size=BLOCK, level=level)
    assert len(stored) == len(flying) > 4
    for index in range(len(stored)):
        for key, value in stored[index].items():
            np.testing.assert_array_equal(flying[index][key], value, err_msg=f"block {index}, {key}")

    from_aligned = train(workspace, root / f"aligned-{name}", f"fused-aligned-{name}", dataloader_workers=0)
    on_the_fly = train(workspace, None, f"fused-fly-{name}", alignment=alignment, dataloader_workers=2, **teachers)
    assert len(from_aligned) == 3 and all(np.isfinite(from_aligned))
    assert on_the_fly == from_aligned


def tree(directory: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``directory``: its modification time and hash."""
    return {str(path.relative_to(directory)): (path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
            for path in sorted(directory.rglob("*")) if path.is_file()}


def test_adding_a_source_touches_only_its_own_directory(workspace):
    root = workspace["root"]
    train(workspace, None, "fused-two", max_steps=1, dataloader_workers=0, **passes(workspace, "a", "b"))
    # The maps of a and b are cached in their own directories, keyed by both tokenizers.
    for name in ("a", "b"):
        (cached,) = (root / f"teacher-{name}" / "vocab-maps").glob("*-marker.npz")
        assert "-to-" in cached.name
    before = {name: tree(root / f"teacher-{name}") for name in ("target", "a", "b")}
    entries = set(root.iterdir())

    extract(root, workspace["c"], "c")
    losses = train(workspace, None, "fused-three", max_steps=2, dataloader_workers=0, **passes(workspace, "a", "b", "c"))
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert {name: tree(root / f"teacher-{name}") for name in ("target", "a", "b")} == before
    assert set(root.iterdir()) - entries == {root / "teacher-c", root / "fused-three"}
    assert len(list((root / "teacher-c" / "vocab-maps").glob("*.npz"))) == 1


def dense(fused, vocab_size: int) -> torch.Tensor:
    """The fused distributions ``[B, L, V]`` (duplicate ids add up)."""
    ids, probs = fused.ids.long(), fused.probs.double()
    out = torch.zeros(*ids.shape[:-1], vocab_size + 1, dtype=torch.float64)
    out.scatter_add_(-1, torch.where(ids >= 0, ids, vocab_size), torch.where(ids >= 0, probs, 0.0))
    return out[..., :vocab_size]


@pytest.mark.parametrize("setting", [{}, {"method": "boundary", "candidates": "prefix"}], ids=["dtw", "prefix"])
@pytest.mark.parametrize("method", ["min_ce", "avg_ce"])
def test_compact_store_fuses_like_float32(workspace, setting, method):
    root = workspace["root"]
    for name in ("target", "a", "b"):
        if not (root / f"wide-{name}").exists():
            extract(root, workspace[name], name, directory=f"wide-{name}", values_dtype="float32")
    alignment = AlignmentOptions(**setting)
    sources = [passes(workspace, "a", "b")["source_passes"], [root / "wide-a", root / "wide-b"]]
    opened = [open_teacher_passes(target, these, alignment)
              for target, these in ((root / "teacher-target", sources[0]), (root / "wide-target", sources[1]))]
    blocks = [PackedBlocks(teachers, block_size=BLOCK) for teachers in opened]
    collate = FusionCollator()
    vocab_size = len(opened[0].target.tokenizer)
    largest = 0.0
    for start in range(0, len(blocks[0]), 8):
        indices = range(start, min(start + 8, len(blocks[0])))
        compact, wide = (collate([b[i] for i in indices]) for b in blocks)
        fused = [fuse([(batch["teacher_ids"][:, n], batch["teacher_logits"][:, n]) for n in range(3)],
                      batch["teacher_ce"].movedim(1, 0), method=method) for batch in (compact, wide)]
        largest = max(largest, float((dense(fused[0], vocab_size) - dense(fused[1], vocab_size)).abs().max()))
    assert 0.0 < largest <= 1e-3


def test_training_needs_one_kind_of_input_and_fresh_teacher_directories(workspace, tmp_path):
    teachers = passes(workspace, "a")
    with pytest.raises(PipelineError, match="give either the output of `fusellm-fast align` or --target-pass"):
        pipeline.train(workspace["target"], workspace["root"] / "aligned-defaults", tmp_path / "x", **teachers)
    with pytest.raises(PipelineError, match="--target-pass: .* another tokenizer"):
        pipeline.train(workspace["a"], None, tmp_path / "x", **teachers)
    # A teacher directory of an older version (raw logits) stops the command with one line.
    old = tmp_path / "old"
    old.mkdir()
    summary = json.loads((workspace["root"] / "teacher-a" / "summary.json").read_text())
    summary.pop("values_are")
    (old / "summary.json").write_text(json.dumps(summary))
    command = [sys.executable, "-m", "fusellm_fast", "train", str(workspace["target"]), "--target-pass",
               str(workspace["root"] / "teacher-target"), "--source-pass", str(old), "-o", str(tmp_path / "y")]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "holds raw top-k logits of an older fusellm-fast; run `fusellm-fast extract` again" in done.stderr
