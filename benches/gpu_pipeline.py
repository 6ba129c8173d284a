"""End-to-end throughput of the pipeline on one GPU with ~100M-parameter models.

Builds, offline, a target (Llama-style, SentencePiece-style BPE tokenizer) and a source (GPT-2-style,
byte-level BPE tokenizer) of about 100M parameters each with random weights (throughput does not
depend on what the weights know), then times each stage of the ``fusellm-fast`` pipeline on a
corpus cut from the Python standard library's source and ``pydoc_data``:

    extract (target), extract (source), align, train (a few FuseLLM MinCE steps, bf16)

and writes tokens per second per stage to ``<out>/gpu_pipeline.json``.

    python benches/gpu_pipeline.py --out "$OUT"            # on a GPU machine (a few minutes)
    python benches/gpu_pipeline.py --out /tmp/x --quick    # tiny models, to check the script on a CPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from fusellm_fast import demo, pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="directory for the models, stages and the JSON report")
    parser.add_argument("--quick", action="store_true", help="tiny models and corpus (a CPU check of the script)")
    parser.add_argument("--texts", type=int, default=2000, help="corpus texts of about --chars characters")
    parser.add_argument("--chars", type=int, default=3000)
    parser.add_argument("--train-steps", type=int, default=40)
    parser.add_argument("--block-size", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    if args.quick:
        args.texts, args.chars, args.train_steps, args.block_size, args.batch_size = 60, 400, 4, 128, 2
    shape = (demo.DemoConfig(vocab_size=512, hidden_size=64, layers=2, heads=2, chunk_chars=args.chars)
             if args.quick else
             demo.DemoConfig(vocab_size=16384, hidden_size=768, layers=12, heads=12, chunk_chars=args.chars))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    report: dict[str, object] = {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu",
        "torch": torch.__version__,
        "cpu_cores": os.cpu_count(),
    }

    started = time.perf_counter()
    texts = demo.domain_texts(args.chars)
    corpus = (texts["code"][: args.texts // 2] + texts["prose"][: args.texts // 2])[: args.texts]
    models = {}
    for name, kind, architecture in (("target", "sp_bpe", "llama"), ("source", "byte_bpe", "gpt2")):
        tokenizer = demo.train_tokenizer(kind, corpus, shape.vocab_size)
        model = demo.new_model(architecture, tokenizer, shape, seed=0)
        report[f"{name}_parameters"] = sum(p.numel() for p in model.parameters())
        models[name] = out / "models" / name
        model.save_pretrained(models[name])
        tokenizer.save_pretrained(models[name])
    report["setup_seconds"] = round(time.perf_counter() - started, 1)
    report["corpus"] = {"texts": len(corpus), "characters": sum(map(len, corpus))}

    stages: dict[str, dict[str, float]] = {}
    for name, path in models.items():
        summary = pipeline.extract(path, [], out / "teacher" / name, texts=corpus, top_k=10,
                                   max_length=args.block_size, batch_size=16 if not args.quick else 4)
        stages[f"extract {name}"] = {"tokens": summary.tokens, "seconds": round(summary.seconds, 2),
                                     "tokens_per_second": round(summary.tokens_per_second)}
    aligned = pipeline.align(out / "teacher" / "target", [out / "teacher" / "source"], out / "aligned")
    stages["align"] = {"tokens": aligned.target_tokens, "seconds": round(aligned.seconds, 2),
                       "tokens_per_second": round(aligned.tokens_per_second),
                       "matched_rate": round(aligned.sources[0]["matched_rate"], 4)}
    trained = pipeline.train(models["target"], out / "aligned", out / "fused", block_size=args.block_size,
                             batch_size=args.batch_size, max_steps=args.train_steps, learning_rate=1e-4,
                             bf16=torch.cuda.is_available(), logging_steps=max(1, args.train_steps // 4))
    stages["train"] = {"tokens": trained.steps * args.batch_size * args.block_size,
                       "seconds": round(trained.seconds, 2), "tokens_per_second": round(trained.tokens_per_second),
                       "steps": trained.steps, "final_loss": round(trained.final_loss, 4)}
    if torch.cuda.is_available():
        report["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    report["stages"] = stages
    (out / "gpu_pipeline.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
