"""The ``fusellm-fast`` command: one subcommand per stage of the FuseLLM pipeline, and a demo.

FuseLLM: Wan et al., "Knowledge Fusion of Large Language Models", ICLR 2024, arXiv 2401.10491.

    fusellm-fast demo
    fusellm-fast vocab-map SOURCE TARGET -o map.npz
    fusellm-fast extract MODEL DATA... -o DIR [--top-k 10] [--max-length 2048] [--shard I/N]
    fusellm-fast align --target DIR --source DIR [--source DIR ...] -o DIR
    fusellm-fast train TARGET_MODEL ALIGNED_DIR -o OUT [--method min_ce|avg_ce] [--lm-weight 0.9]
        [--level sequence|token|text] [--tail renormalize|bucket]
    fusellm-fast train TARGET_MODEL --target-pass DIR --source-pass DIR [--source-pass DIR ...] -o OUT
    fusellm-fast eval MODEL [MODEL ...] --data [NAME=]DATA ... -o DIR [--per-token-of MODEL] [--tasks bbh,...]

Every stage prints a JSON summary when it is done (and writes it next to its output). Any error
(a mistake in the options or inputs, a broken file, a model that cannot be loaded) ends the command
with one line on standard error and exit status 2; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, NoReturn

from .errors import FuseLLMError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line ``argv`` (``sys.argv[1:]`` when omitted) and returns the exit status.

    >>> main(["--version"])  # doctest: +SKIP
    fusellm-fast 0.1.0
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "demo" and args.seeds >= 1 and args.jobs >= 1:
        # Before the heavy imports below, so that the first line comes at once; bad counts are
        # reported by the run itself.
        _announce_demo(args)
    try:
        _quiet_libraries()
        summary = args.run(args)
    except KeyboardInterrupt:
        print(f"fusellm-fast {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as error:
        if args.debug:
            traceback.print_exc()
        print(f"fusellm-fast {args.command}: error: {_one_line(error, debug=args.debug)}", file=sys.stderr)
        return 2
    if summary is not None:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
    return 0


def _one_line(error: Exception, *, debug: bool) -> str:
    """The error as one line: a mistake in the inputs as its message says it; anything else
    (a broken file read by a library, a failure inside one) with its type and a pointer to
    ``--debug``."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    message = " ".join(lines) or type(error).__name__
    if isinstance(error, (FuseLLMError, FileNotFoundError, NotADirectoryError)):
        return message
    if isinstance(error, ModuleNotFoundError):
        return f"{message}; the stages need the torch extra: pip install 'fusellm-fast[torch]'"
    return f"{type(error).__name__}: {message}" + ("" if debug else " (--debug shows the traceback)")


class _Parser(argparse.ArgumentParser):
    """Reports a wrong command line in one line, like every other error of the command."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _quiet_libraries() -> None:
    """Keeps the output to the stages' own progress bars, summaries and errors."""
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(
        prog="fusellm-fast",
        description="Knowledge fusion of LLMs (FuseLLM, Wan et al., ICLR 2024): build a fused target model "
                    "from a target LLM, source LLMs with any tokenizers, and a corpus.",
    )
    parser.add_argument("--version", action="version", version=f"fusellm-fast {__version__}")
    parser.add_argument("--debug", action="store_true", help="on an error, show its traceback too")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for add in (_add_demo, _add_vocab_map, _add_extract, _add_align, _add_train, _add_eval):
        add(commands)
    for command in commands.choices.values():
        # Also after the command's name; SUPPRESS keeps a --debug given before it.
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="on an error, show its traceback too")
    return parser


def _add_demo(commands: Any) -> None:
    demo = commands.add_parser("demo", help="run the built-in CPU miniature of the paper's experiment")
    demo.add_argument("-o", "--output", default="fusellm-demo", help="working directory (default: %(default)s)")
    demo.add_argument("--quick", action="store_true", help="a tiny setting that only checks the plumbing")
    demo.add_argument("--threads", type=int, default=None, help="torch CPU threads per seed (default: 1)")
    demo.add_argument("--seed", type=int, default=0, help="first seed (default: %(default)s)")
    demo.add_argument("--seeds", type=int, default=1, help="repeat the run with this many seeds (default: %(default)s)")
    demo.add_argument("--jobs", type=int, default=1,
                      help="seeds run at the same time, one process each (default: %(default)s)")
    demo.add_argument("--lm-weight", type=float, default=None, help="lambda of the fusion runs (default: 0.5)")
    demo.add_argument("--top-k", type=int, default=None, help="teacher list length (default: 128)")
    demo.add_argument("--alignments", choices=("chosen", "all"), default="chosen",
                      help="align the other-family sources in the demo's chosen setting only, or in every "
                           "setting of the price-of-alignment table (default: %(default)s)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.set_defaults(run=_run_demo)


def _add_vocab_map(commands: Any) -> None:
    vocab = commands.add_parser("vocab-map", help="MinED vocabulary map from a source tokenizer to a target's")
    vocab.add_argument("source", metavar="SOURCE", help="directory with the source tokenizer (or model)")
    vocab.add_argument("target", metavar="TARGET", help="directory with the target tokenizer (or model)")
    vocab.add_argument("-o", "--output", required=True, help="map file to write (.npz)")
    vocab.add_argument("--workers", type=int, default=-1, help="threads (default: every core)")
    vocab.set_defaults(run=_run_vocab_map)


def _add_extract(commands: Any) -> None:
    extract = commands.add_parser("extract", help="teacher pass of one model: top-k lists and CE per text")
    extract.add_argument("model", metavar="MODEL", help="local model directory with its tokenizer")
    extract.add_argument("data", metavar="DATA", nargs="+",
                         help=".txt/.jsonl/.parquet files, directories of them, or a saved dataset")
    extract.add_argument("-o", "--output", required=True, help="output directory (shared by every shard)")
    extract.add_argument("--top-k", type=int, default=10)
    extract.add_argument("--max-length", type=int, default=2048, help="tokens kept per text")
    extract.add_argument("--batch-size", type=int, default=8, help="texts per forward pass")
    extract.add_argument("--shard", default="0/1", help="I/N: process only the I-th of N shares of the corpus")
    extract.add_argument("--text-column", default="text")
    extract.add_argument("--split-chars", type=int, default=4000,
                         help="cut longer texts into pieces of at most this many characters (0: never)")
    extract.add_argument("--chunk-texts", type=int, default=1024, help="texts per saved chunk (unit of resumption)")
    extract.add_argument("--device", default=None, help="cuda, cuda:1, cpu, ... (default: first GPU if any)")
    extract.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto",
                         help="weights' dtype (default: the checkpoint's)")
    extract.add_argument("--values-dtype", choices=("float16", "float32"), default="float16",
                         help="how the top-k log-probabilities are stored (default: %(default)s)")
    extract.add_argument("--no-progress", action="store_true")
    extract.set_defaults(run=_run_extract)


def _add_align(commands: Any) -> None:
    align = commands.add_parser("align", help="align every source's teacher pass to the target's")
    align.add_argument("--target", required=True, help="the target model's extract directory")
    align.add_argument("--source", required=True, action="append", help="a source's extract directory (repeat)")
    align.add_argument("-o", "--output", required=True)
    _add_alignment_options(align, "--source")
    align.add_argument("--workers", type=int, default=-1)
    align.add_argument("--no-progress", action="store_true")
    align.set_defaults(run=_run_align)


def _add_alignment_options(parser: argparse.ArgumentParser, source_flag: str, method_flag: str = "--method") -> None:
    """The options of how sources are aligned, shared by ``align`` and ``train`` (whose ``--method``
    is the fusion's, so that the alignment's is ``--align-method`` there)."""
    parser.add_argument("--vocab-map", action="append", default=None,
                        help=f"a vocab-map file per source, in {source_flag} order "
                             "(default: cached in the source's directory)")
    parser.add_argument("--vocab-align", choices=("soft", "hard"), default="soft")
    parser.add_argument("--onehot", choices=("next", "current"), default="next",
                        help="token a one-hot stand-in points at; 'current' reproduces the published code")
    parser.add_argument("--ce-level", choices=("sequence", "token"), default="sequence",
                        help="one CE per text (the paper) or per target position (default: %(default)s)")
    parser.add_argument("--ce-unit", choices=("token", "byte"), default="token",
                        help="CE that ranks the teachers: per token (paper) or per byte of text")
    parser.add_argument(method_flag, dest="align_method", choices=("dtw", "offsets", "boundary"), default="dtw",
                        help="how positions are paired (default: %(default)s)")
    parser.add_argument("--candidates", choices=("mined", "prefix"), default="mined",
                        help="how source candidates map to target ids (default: %(default)s)")
    parser.add_argument("--normalize", choices=("marker", "bytes"), default="marker",
                        help="token normalization of the MinED map and of dtw (default: %(default)s)")


def _add_train(commands: Any) -> None:
    from .pipeline import TrainConfig

    train = commands.add_parser("train", help="train the target with the FuseLLM objective (FusionTrainer)")
    train.add_argument("target_model", metavar="TARGET_MODEL")
    train.add_argument("aligned", metavar="ALIGNED_DIR", nargs="?", default=None,
                       help="output of align; or give --target-pass and --source-pass to align on the fly")
    train.add_argument("-o", "--output", required=True)
    train.add_argument("--target-pass", default=None, help="the target model's extract directory")
    train.add_argument("--source-pass", action="append", default=[], help="a source's extract directory (repeat)")
    _add_alignment_options(train, "--source-pass", "--align-method")
    TrainConfig.add_arguments(train)
    train.add_argument("--no-progress", action="store_true")
    train.set_defaults(run=_run_train)


def _add_eval(commands: Any) -> None:
    evaluate = commands.add_parser("eval", help="compare models on held-out text (bits per byte) and benchmarks")
    evaluate.add_argument("models", metavar="MODEL", nargs="+", help="local model directory, or NAME=DIRECTORY")
    evaluate.add_argument("--data", action="append", default=[], metavar="[NAME=]DATA",
                          help="a held-out corpus in any format of extract (repeat for several)")
    evaluate.add_argument("-o", "--output", required=True, help="directory of the JSON, table and chart")
    evaluate.add_argument("--per-token-of", default=None, metavar="MODEL",
                          help="perplexity per token of this MODEL's tokenizer (name or directory; default: the first)")
    evaluate.add_argument("--tasks", default=None, help="lm-evaluation-harness tasks: bbh,arc_easy,...")
    evaluate.add_argument("--tasks-dir", default=None, help="directory of local task YAML files (offline use)")
    evaluate.add_argument("--limit", type=int, default=None, help="documents per task at most")
    evaluate.add_argument("--num-fewshot", type=int, default=None, help="few-shot examples (default: each task's)")
    evaluate.add_argument("--allow-code-execution", action="store_true",
                          help="let code tasks (humaneval, mbpp) run the generated code here, unsandboxed")
    evaluate.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass")
    evaluate.add_argument("--max-length", type=int, default=None,
                          help="tokens per window of a long text (default: the model's context)")
    evaluate.add_argument("--stride", type=int, default=None, help="tokens between windows (default: half a window)")
    evaluate.add_argument("--text-column", default="text")
    evaluate.add_argument("--device", default=None, help="cuda, cuda:1, cpu, ... (default: first GPU if any)")
    evaluate.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto")
    evaluate.add_argument("--no-progress", action="store_true")
    evaluate.set_defaults(run=_run_eval)


def _demo_config(args: argparse.Namespace) -> Any:
    from .demo import DemoConfig

    overrides: dict[str, Any] = {"seed": args.seed, "alignments": args.alignments}
    for name in ("threads", "lm_weight", "top_k"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    return DemoConfig.quick(**overrides) if args.quick else DemoConfig(**overrides)


def _announce_demo(args: argparse.Namespace) -> None:
    import os

    from .demo import describe

    print(describe(_demo_config(args), seeds=args.seeds, jobs=args.jobs, cores=os.cpu_count() or 1), flush=True)
    print(f"results go to {args.output}/ (demo_table.md, demo_results.json, demo_curves.png)", flush=True)


def _run_demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    result = run_demo(args.output, _demo_config(args), seeds=args.seeds, jobs=args.jobs,
                      show_progress=not args.no_progress, log=lambda line: print(line, file=sys.stderr))
    print()
    print(result.table())
    print()
    print(result.settings_table())
    print()
    print(result.headline())
    print(f"figures: {args.output}/demo_results.json, plot: {args.output}/demo_curves.png")


def _run_vocab_map(args: argparse.Namespace) -> dict[str, Any]:
    from .pipeline import build_vocab_map

    return asdict(build_vocab_map(args.source, args.target, args.output, workers=args.workers))


def _run_extract(args: argparse.Namespace) -> dict[str, Any]:
    from .pipeline import extract, parse_shard

    summary = extract(
        args.model, args.data, args.output, top_k=args.top_k, max_length=args.max_length,
        batch_size=args.batch_size, shard=parse_shard(args.shard), chunk_texts=args.chunk_texts,
        text_column=args.text_column, split_chars=args.split_chars or None, device=args.device, dtype=args.dtype,
        values_dtype=args.values_dtype, show_progress=not args.no_progress,
    )
    return asdict(summary)


def _alignment_options(args: argparse.Namespace) -> Any:
    from .pipeline import AlignmentOptions

    return AlignmentOptions(vocab_align=args.vocab_align, onehot=args.onehot, ce_unit=args.ce_unit,
                            ce_level=args.ce_level, method=args.align_method, candidates=args.candidates,
                            normalize=args.normalize)


def _run_align(args: argparse.Namespace) -> dict[str, Any]:
    from .pipeline import align

    summary = align(args.target, args.source, args.output, vocab_maps=args.vocab_map, workers=args.workers,
                    show_progress=not args.no_progress, **asdict(_alignment_options(args)))
    return asdict(summary)


def _run_train(args: argparse.Namespace) -> dict[str, Any]:
    from .pipeline import TrainConfig, train

    summary = train(args.target_model, args.aligned, args.output, target_pass=args.target_pass,
                    source_passes=args.source_pass, alignment=_alignment_options(args), vocab_maps=args.vocab_map,
                    config=TrainConfig.from_arguments(args), show_progress=not args.no_progress)
    result = asdict(summary)
    result.pop("log_history")
    return result


def _run_eval(args: argparse.Namespace) -> None:
    from .evaluation import CHART_FILE, RESULTS_FILE, TABLE_FILE, TaskRunner, evaluate, named_paths, parse_tasks
    from .pipeline import PipelineError

    if args.tasks is None and args.tasks_dir is not None:
        raise PipelineError("--tasks-dir: names where tasks are found; say which to run with --tasks")
    models, data = named_paths(args.models, "MODEL"), named_paths(args.data, "--data")
    tasks = None if args.tasks is None else TaskRunner(
        parse_tasks(args.tasks), tasks_dir=args.tasks_dir, batch_size=args.batch_size, limit=args.limit,
        num_fewshot=args.num_fewshot, allow_code_execution=args.allow_code_execution)
    result = evaluate(models, args.output, data=data, tasks=tasks, per_token_of=args.per_token_of,
                      batch_size=args.batch_size, max_length=args.max_length, stride=args.stride,
                      text_column=args.text_column, device=args.device, dtype=args.dtype,
                      show_progress=not args.no_progress)
    print(result.markdown())
    output = args.output
    print(f"figures: {output}/{RESULTS_FILE}, table: {output}/{TABLE_FILE}, chart: {output}/{CHART_FILE}")
