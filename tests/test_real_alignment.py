"""The fast path against the reference on real LLM tokenizers and real text."""

from __future__ import annotations

import numpy as np
import pytest
from rapidfuzz.distance import Levenshtein
from rapidfuzz.process import cdist

import fusellm_fast as ff
from fusellm_fast.hf import tokenizer_vocabulary
from aligned import assert_matches_reference
from realtok import load_tokenizer_or_skip, sample_texts

# (source, target): the paper's pair, a 150k-token source, a 128k-token target,
# and a tokenizer aligned with itself.
PAIRS = [("gpt-neox", "llama2"), ("qwen2", "llama2"), ("mistral", "llama3"), ("llama2", "llama2")]
TEXTS = sample_texts(max_chars=240)


@pytest.fixture(scope="module", params=PAIRS, ids=lambda p: f"{p[1]}<-{p[0]}")
def pair(request):
    source_name, target_name = request.param
    source, target = load_tokenizer_or_skip(source_name), load_tokenizer_or_skip(target_name)
    aligner = ff.Aligner.from_tokenizers(source, target)
    aligner.build_vocab_map()
    return source, target, aligner


def tokenized_texts(source, target, aligner, k=6, seed=0):
    rng = np.random.default_rng(seed)
    texts = []
    for text in TEXTS:
        t = np.array(target(text, add_special_tokens=False).input_ids, dtype=np.int64)
        s = np.array(source(text, add_special_tokens=False).input_ids, dtype=np.int32)
        # Candidates: the true next source token first (as a trained model would
        # rank it), then random ids, with some empty slots.
        topk = rng.integers(0, aligner.source_size, size=(len(s), k)).astype(np.int32)
        topk[:-1, 0] = s[1:]
        topk[rng.random(topk.shape) < 0.05] = -1
        logits = np.sort(rng.normal(size=(len(s), k)).astype(np.float32), axis=1)[:, ::-1]
        texts.append((t, s, topk, logits))
    return texts


def test_markers_are_detected(pair):
    source, target, aligner = pair
    expected = {True: "\u2581", False: "\u0120"}
    for tokenizer, marker in ((source, aligner.source_marker), (target, aligner.target_marker)):
        pieces = tokenizer.convert_ids_to_tokens(tokenizer(" hello world", add_special_tokens=False).input_ids)
        assert marker == expected[any("\u2581" in p for p in pieces)]


@pytest.mark.parametrize("vocab_align", ["soft", "hard"])
@pytest.mark.parametrize("onehot", ["current", "next"])
def test_real_text_equals_reference(pair, vocab_align, onehot):
    source, target, aligner = pair
    texts = tokenized_texts(source, target, aligner)
    args = (tokenizer_vocabulary(source, "s"), tokenizer_vocabulary(target, "t"),
            aligner.source_marker, aligner.target_marker)
    batch = assert_matches_reference(args, texts, vocab_align=vocab_align, onehot=onehot, workers=2,
                                     vocab_map=aligner.vocab_map)
    assert batch.counts.matched > 0


def test_identical_tokenizers_align_every_position():
    tokenizer = load_tokenizer_or_skip("llama2")
    aligner = ff.Aligner.from_tokenizers(tokenizer, tokenizer)
    texts = tokenized_texts(tokenizer, tokenizer, aligner)
    ids = [t for t, *_ in texts]
    batch = ff.align_batch(aligner, ids, ids, [k for *_, k, _ in texts], [x for *_, x in texts], vocab_align="hard")
    assert batch.counts.matched_rate == 1.0
    for b, (t, s, topk, logits) in enumerate(texts):
        # Each candidate maps to itself; only empty slots disappear.
        keep = topk >= 0
        for j in range(len(t)):
            assert batch.ids[b, j, : keep[j].sum()].tolist() == topk[j][keep[j]].tolist()
            assert batch.logits[b, j, : keep[j].sum()].tolist() == logits[j][keep[j]].tolist()


def test_vocab_map_equals_brute_force_on_a_sample(pair):
    source, target, aligner = pair
    source_tokens = tokenizer_vocabulary(source, "s")
    target_tokens = tokenizer_vocabulary(target, "t")
    rng = np.random.default_rng(1)
    # Random ids plus the longest tokens (past the 64-symbol kernel, if any).
    longest = np.argsort([len(t) for t in source_tokens])[-20:]
    sample = np.unique(np.concatenate([rng.choice(len(source_tokens), 300, replace=False), longest]))
    swapped = [source_tokens[i].replace(aligner.source_marker, aligner.target_marker) for i in sample]
    distances = cdist(swapped, target_tokens, scorer=Levenshtein.distance, dtype=np.int32, workers=-1)
    # argmin takes the first minimum: the lowest target id, as MinED's tie rule says.
    expected_ids = distances.argmin(axis=1)
    vm = aligner.vocab_map
    assert vm.target_ids[sample].tolist() == expected_ids.tolist()
    assert vm.distances[sample].tolist() == distances.min(axis=1).tolist()
