"""The teacher store on disk and the on-the-fly data loader, on real tokenizers and real text.

Run: ``python benches/teacher_store_report.py > report.md`` (progress on stderr). Not part of the
package.

Models: a Llama-style model (1 layer, width 64) per real tokenizer of ``tests/realtok.py`` with its
real (padded) embedding matrix: Llama-2 (32,000 tokens) and Qwen2 (151,646 tokens, 151,936 rows).
The weights are random, and the output layer is scaled so that a position's top-10 holds a mass
like a small trained model's (the report gives it); the ids a random model ranks first are spread
over the whole vocabulary, which makes them harder to compress than a trained model's. Texts: the
``help`` and ``code`` domains of ``alignment_workload.py`` cut into pieces of 2,000 characters.

Sections:

1. Bytes per token per model on disk at K = 10: the teacher pass as this version stores it
   (log-probabilities in float16, smallest id types, zstd), the same in float32, the previous
   version's layout (int32 ids, float32 logits, float32 per-token CE in a ``datasets`` directory),
   and what ``align`` adds per source and token.
2. Data-loader throughput with on-the-fly alignment: one process (what one DataLoader worker does)
   makes every 2,048-token training block of a target Llama-2 pass with two sources (Qwen2 and
   GPT-NeoX), aligning their texts with ``align_batch``; target tokens per second, fastest of three
   passes over all blocks, beside reading the same blocks from ``align``'s output.
3. Fidelity: the float16 store's listed probabilities against the float32 store's.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from alignment_workload import DOMAINS, corpus  # noqa: E402
from report_frame import log, print_report  # noqa: E402
from realtok import load_tokenizer, spec  # noqa: E402

TOP_K = 10
PIECE_CHARS = 2000
PIECES_PER_DOMAIN = int(os.environ.get("TEACHER_STORE_PIECES", "24"))
LOGIT_SCALE = 30.0
BLOCK = 2048
ROUNDS = 3


def texts() -> list[str]:
    pieces = []
    for domain in DOMAINS:
        text = corpus(domain)
        pieces += [text[i : i + PIECE_CHARS] for i in range(0, PIECES_PER_DOMAIN * PIECE_CHARS, PIECE_CHARS)]
    return pieces


def save_model(name: str, directory: Path, seed: int) -> Path:
    """A random Llama-style model of the real tokenizer ``name``'s (padded) vocabulary."""
    import torch
    import transformers

    tokenizer = load_tokenizer(name)
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=spec(name).embedding_rows, hidden_size=64, intermediate_size=128,
                                      num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=1024, eos_token_id=tokenizer.eos_token_id)
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight *= LOGIT_SCALE
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def size_of(directory: Path, pattern: str = "*") -> int:
    return sum(path.stat().st_size for path in directory.rglob(pattern) if path.is_file())


def old_layout_bytes(records, directory: Path) -> int:
    """The previous version's teacher directory for the same records: its ``datasets`` columns."""
    import datasets

    features = datasets.Features({
        "text_index": datasets.Value("int64"),
        "input_ids": datasets.Sequence(datasets.Value("int32")),
        "topk_ids": datasets.Array2D(shape=(None, TOP_K), dtype="int32"),
        "topk_logits": datasets.Array2D(shape=(None, TOP_K), dtype="float32"),
        "token_ce": datasets.Sequence(datasets.Value("float32")),
        "ce": datasets.Value("float32"),
        "total_ce": datasets.Value("float64"),
        "num_bytes": datasets.Value("int64"),
        "dropped": datasets.Value("int32"),
    })
    rows = records.rows(0, len(records))
    columns = {name: [row[name] for row in rows] for name in features if name not in ("topk_logits", "dropped")}
    columns["topk_logits"] = [row["topk_log_probs"] for row in rows]
    columns["dropped"] = [0] * len(rows)
    datasets.Dataset.from_dict(columns, features=features).save_to_disk(str(directory))
    return size_of(directory)


def store_section(root: Path, corpus_texts: list[str]) -> tuple[list[str], dict[str, Path]]:
    from fusellm_fast import pipeline

    lines = ["## Bytes per token per model on disk (K = 10)", "",
             "| vocabulary | tokens | top-10 mass (mean) | this version (float16) | float32 values | "
             "previous version | previous `align`, per source |", "|---|---:|---:|---:|---:|---:|---:|"]
    teachers: dict[str, Path] = {}
    for seed, name in enumerate(("llama2", "qwen2", "gpt-neox")):
        model = save_model(name, root / "models" / name, seed)
        sizes = {}
        for dtype in ("float16", "float32"):
            log(f"extract {name} ({dtype})")
            output = root / f"teacher-{name}-{dtype}"
            summary = pipeline.extract(model, [], output, texts=corpus_texts, top_k=TOP_K, max_length=1024,
                                       batch_size=2, values_dtype=dtype, show_progress=False)
            sizes[dtype] = size_of(output, "shard-*/part-*/*")
        teachers[name] = root / f"teacher-{name}-float16"
        records = pipeline.load_extracted(teachers[name], arg="DIR").records
        tokens = summary.tokens
        mass = float(np.mean([np.exp(r["topk_log_probs"].astype(np.float64)).sum(1).mean() for r in records]))
        old = old_layout_bytes(records, root / f"old-{name}")
        aligned = ""
        if name != "llama2":
            log(f"align {name} to llama2 (the previous version's extra copy)")
            pipeline.align(teachers["llama2"], [teachers[name]], root / f"aligned-{name}", show_progress=False)
            target_tokens = int(pipeline.load_extracted(teachers["llama2"], arg="DIR").records.lengths().sum())
            # The aligned copy holds the target's lists and the source's: the source adds half.
            aligned = f"{size_of(root / f'aligned-{name}' / 'data') / target_tokens / 2:.1f}"
        lines.append(f"| {spec(name).models} ({spec(name).vocab_size:,}) | {tokens:,} | {mass:.2f} | "
                     f"**{sizes['float16'] / tokens:.1f}** | {sizes['float32'] / tokens:.1f} | {old / tokens:.1f} | "
                     f"{aligned or 'n/a (target)'} |")
    lines += ["", "FuseLLM's own format takes about 100 bytes per token and model (quoted, not measured here). "
              "Training on the teacher passes writes nothing "
              "per source and target but the vocabulary map, cached once per pair in the source's directory: "]
    maps = sorted((root / "teacher-qwen2-float16" / "vocab-maps").glob("*.npz"))
    lines[-1] += ", ".join(f"{path.stat().st_size / 2**20:.2f} MiB ({path.name})" for path in maps) + "."
    return lines + [""], teachers


def blocks_per_second(blocks) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for index in range(len(blocks)):
            blocks[index]
        best = min(best, time.perf_counter() - started)
    return len(blocks) * BLOCK / best


def loader_section(root: Path, teachers: dict[str, Path]) -> list[str]:
    from fusellm_fast import pipeline
    from fusellm_fast.pipeline import AlignmentOptions, PackedBlocks, open_teacher_passes

    lines = ["## Data-loader throughput, one process", "",
             f"Target Llama-2, sources Qwen2 and GPT-NeoX, K = 10, blocks of {BLOCK} target tokens; target tokens "
             f"per second to make every block, fastest of {ROUNDS} passes.", "",
             "| alignment | blocks | on the fly (`train --target-pass ...`) | from `align`'s output |",
             "|---|---:|---:|---:|"]
    sources = [teachers["qwen2"], teachers["gpt-neox"]]
    for label, options in (("dtw, marker, MinED (default)", {}),
                           ("boundary, bytes, prefix", {"method": "boundary", "candidates": "prefix",
                                                         "normalize": "bytes"})):
        alignment = AlignmentOptions(**options)
        log(f"loader: {label}")
        flying = PackedBlocks(open_teacher_passes(teachers["llama2"], sources, alignment), block_size=BLOCK)
        aligned_dir = root / f"aligned-both-{options.get('method', 'dtw')}"
        pipeline.align(teachers["llama2"], sources, aligned_dir, show_progress=False, **options)
        stored = PackedBlocks(pipeline.load_aligned(aligned_dir, arg="DIR")[0], block_size=BLOCK)
        lines.append(f"| {label} | {len(flying)} | {blocks_per_second(flying):,.0f} | "
                     f"{blocks_per_second(stored):,.0f} |")
    return lines + [""]


def fidelity_section(root: Path) -> list[str]:
    from fusellm_fast import pipeline

    lines = ["## Fidelity of the float16 store", "",
             "| vocabulary | listed probabilities | max abs difference | max abs difference of log-probability |",
             "|---|---:|---:|---:|"]
    for name in ("llama2", "qwen2"):
        narrow, wide = (pipeline.load_extracted(root / f"teacher-{name}-{dtype}", arg="DIR").records
                        for dtype in ("float16", "float32"))
        values = [(a["topk_log_probs"], b["topk_log_probs"]) for a, b in zip(narrow, wide)]
        prob = max(float(np.abs(np.exp(a) - np.exp(b)).max()) for a, b in values)
        log_prob = max(float(np.abs(a - b).max()) for a, b in values)
        count = sum(a.size for a, _ in values)
        lines.append(f"| {spec(name).models} | {count:,} | {prob:.2e} | {log_prob:.2e} |")
    return lines + ["", "`tests/test_on_the_fly.py` checks the fused distributions (MinCE and AvgCE, DTW and "
                    "prefix candidates) of the float16 store against the float32 store's within 1e-3.", ""]


def sections() -> list[str]:
    root = Path(tempfile.mkdtemp(prefix="teacher-store-"))
    try:
        corpus_texts = texts()
        store, teachers = store_section(root, corpus_texts)
        return store + loader_section(root, teachers) + fidelity_section(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    print_report("Teacher store and on-the-fly alignment", "teacher_store_report.py", sections)
