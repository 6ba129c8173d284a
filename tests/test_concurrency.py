"""align_batch under threads and processes: worker counts, aligners shared by eight threads, fork and
datasets.map in four worker processes."""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fusellm_fast as ff

from boundary import (
    ALIGNER, BATCH, SOURCE_TOKENS, TARGET_TOKENS, align, assert_same_result, expected,
)


@pytest.mark.parametrize("workers", [2, -1])
def test_worker_counts_give_same_result(workers, expected):
    assert_same_result(align(BATCH, workers=workers), expected)
    assert_same_result(align(BATCH, workers=workers, vocab_align="hard", onehot="current"),
                       align(BATCH, workers=1, vocab_align="hard", onehot="current"))


SHARED_SETTINGS = [
    ("marker", {"vocab_align": mode, "workers": workers}) for mode in ("soft", "hard") for workers in (1, 2)
] + [
    ("bytes", {"method": method, "candidates": candidates, "workers": 2})
    for method, candidates in (("dtw", "mined"), ("offsets", "mined"), ("boundary", "prefix"))
]


def test_shared_aligners_under_eight_threads_give_serial_results():
    def aligners() -> dict[str, ff.Aligner]:
        # Their maps are built lazily, by whichever thread comes first.
        return {normalize: ff.Aligner(SOURCE_TOKENS, TARGET_TOKENS, normalize=normalize)
                for normalize in ("marker", "bytes")}

    serial_aligners = aligners()
    serial = [align(BATCH, aligner=serial_aligners[name], **o) for name, o in SHARED_SETTINGS]
    shared = aligners()
    threads = 8
    start = threading.Barrier(threads)

    def run_all(first: int) -> list[tuple[int, ff.AlignedBatch]]:
        start.wait()
        # Threads start on different settings, so that every pair of them runs at once somewhere.
        order = [(first + i) % len(SHARED_SETTINGS) for i in range(len(SHARED_SETTINGS))] * 2
        return [(i, align(BATCH, aligner=shared[SHARED_SETTINGS[i][0]], **SHARED_SETTINGS[i][1])) for i in order]

    with ThreadPoolExecutor(threads) as pool:
        per_thread = list(pool.map(run_all, range(threads)))
    for results in per_thread:
        assert len(results) == 2 * len(SHARED_SETTINGS)
        for i, result in results:
            assert_same_result(result, serial[i])
    assert shared["marker"].vocab_map == ALIGNER.vocab_map
    assert shared["bytes"].vocab_map == serial_aligners["bytes"].vocab_map


@contextlib.contextmanager
def deadline(seconds: float):
    """Raises TimeoutError in the main thread if the block runs longer than ``seconds``."""
    def expire(signum, frame):
        raise TimeoutError(f"did not finish within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_forked_child_can_align(expected):
    align(BATCH, workers=2)  # thread pools have run in this process before the fork
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            os.close(read_end)
            out = align(BATCH, workers=2)
            with os.fdopen(write_end, "wb") as pipe:
                pickle.dump((out.ids, out.logits, out.status), pipe)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        ready = select.select([pipe], [], [], 60)[0]
        if not ready:
            os.kill(pid, signal.SIGKILL)
        data = pipe.read() if ready else b""
    exit_status = os.waitpid(pid, 0)[1]
    assert ready, "the forked child did not finish within 60 s"
    assert os.waitstatus_to_exitcode(exit_status) == 0
    ids, logits, status = pickle.loads(data)
    np.testing.assert_array_equal(ids, expected.ids)
    np.testing.assert_array_equal(logits, expected.logits)
    np.testing.assert_array_equal(status, expected.status)


def align_rows(rows: dict) -> dict:
    """A batched ``datasets.map`` function; module level so worker processes find it by name."""
    out = ff.align_batch(ALIGNER, rows["target_ids"], rows["source_ids"], rows["topk_ids"], rows["topk_logits"],
                         workers=2)
    return {
        "aligned_ids": [out.ids[b, :n].tolist() for b, n in enumerate(out.lengths)],
        "aligned_status": [out.status[b, :n].tolist() for b, n in enumerate(out.lengths)],
        "process": [os.getpid()] * len(out),
    }


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="the deadline needs SIGALRM (POSIX-only)")
def test_dataset_map_in_four_processes_matches_in_process(expected, tmp_path):
    datasets = pytest.importorskip("datasets")
    align(BATCH, workers=2)  # thread pools have run in this process before datasets forks
    table = datasets.Dataset.from_dict({
        "target_ids": [r.tolist() for r in BATCH.target_ids], "source_ids": [r.tolist() for r in BATCH.source_ids],
        "topk_ids": [r.tolist() for r in BATCH.topk_ids], "topk_logits": [r.tolist() for r in BATCH.topk_logits],
    })
    with deadline(120):
        mapped = table.map(align_rows, batched=True, batch_size=2, num_proc=4, new_fingerprint="aligned",
                           cache_file_name=str(tmp_path / "aligned.arrow"))
    processes = set(mapped["process"])
    assert os.getpid() not in processes  # the rows were aligned in worker processes
    assert mapped["aligned_ids"] == [expected.ids[b, :n].tolist() for b, n in enumerate(expected.lengths)]
    assert mapped["aligned_status"] == [expected.status[b, :n].tolist() for b, n in enumerate(expected.lengths)]
