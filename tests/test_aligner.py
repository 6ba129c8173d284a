"""Aligner and VocabMap.build: the vocabularies and options they accept and reject, and
Aligner.from_tokenizers on Hugging Face tokenizers."""

from __future__ import annotations

import numpy as np
import pytest

import fusellm_fast as ff

from boundary import (
    Batch, G, SOURCE_TOKENS, SP, TARGET_TOKENS, align, assert_matches_reference, assert_names_argument,
    assert_same_result,
)


# (a call building vocabularies or a map, the argument its error must name)
CONSTRUCTOR_TYPE_ERRORS = {
    "string as vocabulary": (lambda: ff.Aligner(G + "the", TARGET_TOKENS), "source_tokens"),
    "non-string token": (lambda: ff.Aligner(SOURCE_TOKENS, TARGET_TOKENS[:-1] + [7]), "target_tokens"),
    "marker not a string": (lambda: ff.VocabMap.build(SOURCE_TOKENS, TARGET_TOKENS, source_marker=1), "source_marker"),
    "vocab_map not a VocabMap": (lambda: ff.Aligner(SOURCE_TOKENS, TARGET_TOKENS, vocab_map={}), "vocab_map"),
    "not a tokenizer": (lambda: ff.Aligner.from_tokenizers(SOURCE_TOKENS, TARGET_TOKENS), "source_tokenizer"),
    "workers not an int": (lambda: ff.VocabMap.build(SOURCE_TOKENS, TARGET_TOKENS, workers="2"), "workers"),
}
CONSTRUCTOR_VALUE_ERRORS = {
    "empty marker": (lambda: ff.Aligner(SOURCE_TOKENS, TARGET_TOKENS, target_marker=""), "target_marker"),
    "empty source vocabulary": (lambda: ff.Aligner([], TARGET_TOKENS, source_marker=G), "source_tokens"),
    "empty target vocabulary": (
        lambda: ff.VocabMap.build(SOURCE_TOKENS, [], target_marker=SP), "target_tokens"),
    "zero workers": (lambda: ff.VocabMap.build(SOURCE_TOKENS, TARGET_TOKENS, workers=0), "workers"),
    "workers -3": (lambda: ff.Aligner(SOURCE_TOKENS, TARGET_TOKENS).build_vocab_map(workers=-3), "workers"),
}


@pytest.mark.parametrize("build, arg", CONSTRUCTOR_TYPE_ERRORS.values(), ids=CONSTRUCTOR_TYPE_ERRORS.keys())
def test_constructor_type_errors_name_the_argument(build, arg):
    with pytest.raises(ff.InputTypeError) as info:
        build()
    assert_names_argument(info.value, arg)


@pytest.mark.parametrize("build, arg", CONSTRUCTOR_VALUE_ERRORS.values(), ids=CONSTRUCTOR_VALUE_ERRORS.keys())
def test_constructor_value_errors_name_the_argument(build, arg):
    with pytest.raises(ff.InvalidInputError) as info:
        build()
    assert type(info.value) is ff.InvalidInputError
    assert_names_argument(info.value, arg)


MARKERLESS = ["the", "cat", "s"]


@pytest.mark.parametrize("build", [ff.Aligner, ff.VocabMap.build], ids=["Aligner", "VocabMap.build"])
@pytest.mark.parametrize("side", ["source", "target"])
def test_undetectable_marker_raises_marker_detection_error(build, side):
    vocabularies = {"source_tokens": SOURCE_TOKENS, "target_tokens": TARGET_TOKENS, f"{side}_tokens": MARKERLESS}
    with pytest.raises(ff.MarkerDetectionError) as info:
        build(**vocabularies)
    assert_names_argument(info.value, f"{side}_tokens")
    # Given explicitly, the marker needs no detection.
    explicit = build(**vocabularies, **{f"{side}_marker": "_"})
    assert getattr(explicit, f"{side}_marker") == "_"


def test_vocabulary_with_both_markers_equally_often_is_ambiguous():
    with pytest.raises(ff.MarkerDetectionError, match="^target_tokens: "):
        ff.Aligner(SOURCE_TOKENS, [SP + "a", G + "b", "c"])


# --- Hugging Face tokenizers ----------------------------------------------------------

CORPUS = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog", "hello there cat",
          "the cats and the dogs sat there"]


def train_tokenizer(marker: str, directory):
    """A small BPE tokenizer with one added token, saved and reloaded from ``directory``."""
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    model = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="[UNK]"))
    if marker == G:
        model.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=True)
        model.decoder = tokenizers.decoders.ByteLevel()
    else:
        model.pre_tokenizer = tokenizers.pre_tokenizers.Metaspace()
        model.decoder = tokenizers.decoders.Metaspace()
    model.train_from_iterator(CORPUS, tokenizers.trainers.BpeTrainer(vocab_size=70, special_tokens=["[UNK]"]))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=model, unk_token="[UNK]")
    fast.add_tokens(["<extra>"])
    fast.save_pretrained(directory)
    return transformers.AutoTokenizer.from_pretrained(directory)


@pytest.fixture(scope="module")
def tokenizer_pair(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tokenizers")
    return train_tokenizer(G, directory / "source"), train_tokenizer(SP, directory / "target")


def vocabulary(tokenizer) -> list[str]:
    return tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))


def test_from_tokenizers_reads_whole_vocabularies(tokenizer_pair):
    source, target = tokenizer_pair
    aligner = ff.Aligner.from_tokenizers(source, target)
    assert (aligner.source_marker, aligner.target_marker) == (G, SP)
    assert (aligner.source_size, aligner.target_size) == (len(source), len(target))
    assert vocabulary(source)[-1] == vocabulary(target)[-1] == "<extra>"  # added tokens are counted


def test_from_tokenizers_aligns_like_the_reference(tokenizer_pair):
    source, target = tokenizer_pair
    texts = ["the cat sat on the mat", "hello there dogs", "a cat"]
    rng = np.random.default_rng(6)
    target_ids = [np.array(target(t, add_special_tokens=False)["input_ids"]) for t in texts]
    source_ids = [np.array(source(t, add_special_tokens=False)["input_ids"]) for t in texts]
    topk_ids = []
    for s in source_ids:
        ids = rng.integers(0, len(source), (len(s), 3))
        ids[:-1, 0] = s[1:]
        topk_ids.append(ids)
    logits = [(rng.integers(-8, 8, ids.shape) / 2).astype(np.float32) for ids in topk_ids]
    batch = Batch(target_ids, source_ids, topk_ids, logits)
    out = align(batch, aligner=ff.Aligner.from_tokenizers(source, target))
    assert out.counts.matched > 0
    assert_matches_reference(out, batch, vocabulary(source), vocabulary(target))
    from_lists = ff.Aligner(vocabulary(source), vocabulary(target))
    assert_same_result(align(batch, aligner=from_lists), out)
