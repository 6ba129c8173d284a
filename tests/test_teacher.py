"""The teacher pass against an unbatched, per-text forward of the same tiny model, and its resumable output."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
datasets = pytest.importorskip("datasets")
pa = pytest.importorskip("pyarrow")
tokenizers = pytest.importorskip("tokenizers")

import tiny_models
from fusellm_fast import teacher
from fusellm_fast.errors import InputTypeError, InvalidInputError
from fusellm_fast.teacher import TeacherRecords, extract_topk, load_topk

WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away", "and", "then", "slept"]
TEXTS = [
    "the cat sat on the mat",
    "a dog ran",
    "the dog ran far away and then slept on a mat",
    "cat",
    "then the cat slept",
    "a mat and a dog",
    "the dog sat",
]
PADDED_ROWS = 3  # embedding rows beyond the tokenizer, as in models whose vocabulary is padded


@pytest.fixture(scope="module")
def tokenizer():
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {word: i + 3 for i, word in enumerate(WORDS)}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    # A BOS post-processor, so that the test shows the teacher pass adds no special tokens.
    backend.post_processor = tokenizers.processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )


def tiny_llama(vocab_size, seed=0):
    return tiny_models.tiny_llama(vocab_size, seed=seed, bos_token_id=1, eos_token_id=2, pad_token_id=0).eval()


@pytest.fixture(scope="module")
def model(tokenizer):
    model = tiny_llama(len(tokenizer) + PADDED_ROWS)
    with torch.no_grad():
        # Padded rows that would win the top-k at every position: they are no tokens.
        model.lm_head.weight[-PADDED_ROWS:] = 50.0 * model.lm_head.weight[3 : 3 + PADDED_ROWS]
    return model


def own_logits(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0].float()


def expected_ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def real_log_softmax(logits, vocab_size):
    """log_softmax over the tokenizer's ids only: padded embedding rows are no tokens."""
    return torch.log_softmax(logits[:, :vocab_size], dim=-1)


def test_rows_match_an_unbatched_forward(model, tokenizer):
    k = 6
    rows = extract_topk(model, tokenizer, TEXTS, k=k, batch_size=3, values_dtype="float32")
    assert isinstance(rows, TeacherRecords) and len(rows) == len(TEXTS) and rows.values_are == "log_probs"
    for index, text in enumerate(TEXTS):
        row = rows[index]
        ids = expected_ids(tokenizer, text)
        assert row["text_index"] == index and row["input_ids"].tolist() == ids
        assert row["num_bytes"] == len(text.encode())
        log_probs = real_log_softmax(own_logits(model, ids), len(tokenizer))
        token_ce = -log_probs[:-1].gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]
        np.testing.assert_allclose(row["token_ce"], token_ce.numpy(), rtol=5e-4)  # stored in float16
        assert row["ce"] == pytest.approx(token_ce.mean().item(), abs=1e-5)
        assert row["total_ce"] == pytest.approx(token_ce.sum().item(), abs=1e-4)
        top = log_probs.topk(k)
        # The padded rows win every position's raw top-k; over the real vocabulary they take no part.
        assert row["topk_ids"].tolist() == top.indices.tolist()
        np.testing.assert_allclose(row["topk_log_probs"], top.values.numpy(), atol=1e-5)


def test_stored_log_probs_are_log_softmax_within_16_bit_rounding(model, tokenizer, tmp_path):
    """On disk in float16, the listed values are log_softmax at the listed ids, rounded once."""
    rows = extract_topk(model, tokenizer, TEXTS, k=5, batch_size=2, output_dir=tmp_path / "run")
    for index, text in enumerate(TEXTS):
        row = rows[index]
        log_probs = real_log_softmax(own_logits(model, expected_ids(tokenizer, text)), len(tokenizer)).double()
        exact = log_probs.gather(-1, torch.from_numpy(row["topk_ids"]).long()).numpy()
        half_ulp = np.spacing(np.abs(exact).astype(np.float16)).astype(np.float64) / 2
        assert (np.abs(row["topk_log_probs"] - exact) <= half_ulp + 1e-6).all()
        assert (row["topk_ids"] < len(tokenizer)).all()
        tail = 1.0 - np.exp(row["topk_log_probs"].astype(np.float64)).sum(axis=1)
        np.testing.assert_allclose(tail, 1.0 - np.exp(exact).sum(axis=1), atol=2e-3)
        assert (tail > -2e-3).all()
        token_ce = -log_probs[:-1].gather(-1, torch.tensor(row["input_ids"][1:]).long()[:, None])[:, 0].numpy()
        np.testing.assert_allclose(row["token_ce"], token_ce, rtol=1e-3, atol=1e-3)
    # The smallest types: 16 tokens fit in uint8; values and per-token CE in float16.
    (part,) = (tmp_path / "run").glob("shard-*/part-*/records.arrow")
    schema = pa.ipc.open_file(pa.memory_map(str(part))).schema
    assert str(schema.field("input_ids").type) == "list<item: uint8>"
    assert str(schema.field("topk_ids").type) == "list<item: fixed_size_list<item: uint8>[5]>"
    assert str(schema.field("topk_log_probs").type) == "list<item: fixed_size_list<item: halffloat>[5]>"
    assert str(schema.field("token_ce").type) == "list<item: halffloat>"


def test_bfloat16_model_is_scored_in_float32(tokenizer):
    model = tiny_llama(len(tokenizer), seed=1).to(torch.bfloat16)
    row = extract_topk(model, tokenizer, TEXTS[:1], k=3, values_dtype="float32")[0]
    ids = expected_ids(tokenizer, TEXTS[0])
    log_probs = real_log_softmax(own_logits(model, ids), len(tokenizer))  # bfloat16 logits, upcast
    token_ce = -log_probs[:-1].gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]
    np.testing.assert_allclose(row["token_ce"], token_ce.numpy(), rtol=5e-4)
    np.testing.assert_allclose(row["topk_log_probs"], log_probs.topk(3).values.numpy(), atol=1e-6)


def test_float16_storage_and_max_length(model, tokenizer):
    model.train()
    try:
        before = {name: value.clone() for name, value in model.state_dict().items()}
        full = extract_topk(model, tokenizer, [TEXTS[2]], k=4, values_dtype="float32")[0]
        cut = extract_topk(model, tokenizer, [TEXTS[2]], k=4, max_length=5)[0]
        assert model.training
        assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    finally:
        model.eval()
    assert cut["input_ids"].tolist() == tokenizer(TEXTS[2], add_special_tokens=False)["input_ids"][:5]
    assert cut["topk_ids"].shape == (5, 4) and cut["token_ce"].shape == (4,)
    np.testing.assert_array_equal(cut["topk_ids"], full["topk_ids"][:5])
    np.testing.assert_allclose(cut["topk_log_probs"], full["topk_log_probs"][:5], rtol=1e-3, atol=1e-3)


def test_dataset_input_and_local_paths(model, tokenizer, tmp_path):
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    corpus = datasets.Dataset.from_dict({"body": TEXTS[:3], "other": [1, 2, 3]})
    from_paths = extract_topk(tmp_path / "model", str(tmp_path / "model"), corpus, k=3, text_column="body")
    in_memory = extract_topk(model, tokenizer, TEXTS[:3], k=3)
    assert [r["input_ids"].tolist() for r in from_paths] == [r["input_ids"].tolist() for r in in_memory]
    np.testing.assert_allclose(from_paths.column("ce"), in_memory.column("ce"), rtol=1e-6)


class CountingModel(torch.nn.Module):
    """Wraps a model, counts forward passes, and fails on a chosen one (an interrupted run)."""

    def __init__(self, model, fail_on_call=None):
        super().__init__()
        self.model, self.calls, self.fail_on_call = model, 0, fail_on_call

    def forward(self, **inputs):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt
        return self.model(**inputs)


def test_interrupted_sharded_run_continues_where_it_stopped(model, tokenizer, tmp_path):
    options = {"k": 3, "batch_size": 2, "texts_per_part": 2, "output_dir": tmp_path / "run"}
    expected = extract_topk(model, tokenizer, TEXTS, k=3)
    # Shard 0 of 2 holds texts 0-3 (parts of 2 texts, one forward each); the second part fails.
    interrupted = CountingModel(model, fail_on_call=2)
    with pytest.raises(KeyboardInterrupt):
        extract_topk(interrupted, tokenizer, TEXTS, shard=(0, 2), **options)
    with pytest.raises(InvalidInputError, match=r"shard-00000-of-00002/part-000001 is missing.*shard=\(0, 2\)"):
        load_topk(tmp_path / "run")

    resumed = CountingModel(model)
    shard_0 = extract_topk(resumed, tokenizer, TEXTS, shard=(0, 2), **options)
    assert resumed.calls == 1  # only the part that was not saved
    assert shard_0.column("text_index").tolist() == [0, 1, 2, 3]
    shard_1 = extract_topk(model, tokenizer, TEXTS, shard=(1, 2), **options)
    assert shard_1.column("text_index").tolist() == [4, 5, 6]
    again = CountingModel(model)
    extract_topk(again, tokenizer, TEXTS, shard=(1, 2), **options)
    assert again.calls == 0

    joined = load_topk(tmp_path / "run")
    assert joined.lengths().tolist() == expected.lengths().tolist()
    assert_same_rows(joined, expected)


def assert_same_rows(rows, expected):
    """Integer columns equal, float columns equal up to the rounding of differently padded batches
    (float16 storage: one rounding step)."""
    assert len(rows) == len(expected)
    for index in range(len(rows)):
        for name, value in expected[index].items():
            if np.issubdtype(np.asarray(value).dtype, np.floating):
                np.testing.assert_allclose(rows[index][name], value, rtol=2e-3, atol=2e-3)
            else:
                np.testing.assert_array_equal(rows[index][name], value)


def test_old_teacher_directories_stop_with_one_line(model, tokenizer, tmp_path):
    (tmp_path / "extract_topk.json").write_text('{"format": 1, "k": 3, "num_shards": 1}')
    for call in (lambda: load_topk(tmp_path), lambda: extract_topk(model, tokenizer, TEXTS, k=3, output_dir=tmp_path)):
        with pytest.raises(InvalidInputError, match=r"format 1 \(raw top-k logits\); run extract again") as error:
            call()
        assert "\n" not in str(error.value)


def test_output_dir_refuses_other_settings_or_texts(model, tokenizer, tmp_path):
    extract_topk(model, tokenizer, TEXTS[:2], k=3, output_dir=tmp_path)
    with pytest.raises(InvalidInputError, match=r"output_dir: holds a run with other settings \(k 3 there, 4 here\)"):
        extract_topk(model, tokenizer, TEXTS[:2], k=4, output_dir=tmp_path)
    with pytest.raises(InvalidInputError, match="was computed from other texts"):
        extract_topk(model, tokenizer, TEXTS[2:4], k=3, output_dir=tmp_path)


def test_padded_vocabulary_of_a_real_tokenizer(tmp_path):
    realtok = pytest.importorskip("realtok")
    qwen = realtok.load_tokenizer_or_skip("qwen2")
    rows_of_embedding = realtok.spec("qwen2").embedding_rows
    assert rows_of_embedding > len(qwen)
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=rows_of_embedding, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight[len(qwen) :] *= 100.0  # the padded rows dominate the top-k
    row = extract_topk(model, qwen, ["Hello world, this is Qwen."], k=5)[0]
    assert (row["topk_ids"] < len(qwen)).all() and np.isfinite(row["ce"])
    assert (np.exp(row["topk_log_probs"].astype(np.float64)).sum(axis=1) <= 1.0 + 1e-3).all()


@pytest.mark.parametrize(
    ("texts", "options", "error", "pattern"),
    [
        ("the cat", {}, InputTypeError, "texts_or_dataset: must be a sequence of strings or a datasets.Dataset"),
        (["the", 3], {}, InputTypeError, "texts_or_dataset: text 1 is int"),
        (["the", ""], {}, InvalidInputError, "texts_or_dataset: text 1 is empty"),
        (["the", "   "], {}, InvalidInputError, "texts_or_dataset: text 1 has no token besides EOS"),
        (["the"], {"batch_size": 0}, InvalidInputError, "batch_size: must be an int >= 1"),
        (["the"], {"max_length": 1}, InvalidInputError, "max_length: must be an int >= 2"),
        (["the"], {"k": 0}, InvalidInputError, "k: must be an int >= 1"),
        (["the"], {"k": 17}, InvalidInputError, "k: must be at most the vocabulary of 16 tokens"),
        (["the"], {"values_dtype": "bfloat16"}, InvalidInputError, "values_dtype: must be one of"),
        (["the"], {"shard": (2, 2)}, InvalidInputError, r"shard: must be \(index, count\)"),
        (["the"], {"shard": [0, 1]}, InvalidInputError, r"shard: must be \(index, count\)"),
        (["the"], {"texts_per_part": 0}, InvalidInputError, "texts_per_part"),
        (["the"], {"device": "nowhere"}, InvalidInputError, "device: "),
    ],
)
def test_rejects_bad_input(model, tokenizer, texts, options, error, pattern):
    with pytest.raises(error, match=pattern):
        extract_topk(model, tokenizer, texts, **options)


def test_rejects_bad_models_tokenizers_and_columns(model, tokenizer, tmp_path):
    no_eos = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer, unk_token="<unk>")
    with pytest.raises(InvalidInputError, match="tokenizer: has no eos_token_id"):
        extract_topk(model, no_eos, ["the cat"])
    with pytest.raises(InvalidInputError, match="tokenizer: produced id 15, beyond the model's vocabulary of 10"):
        extract_topk(tiny_llama(10), tokenizer, ["slept"])
    with pytest.raises(InputTypeError, match="model: must be a torch.nn.Module or a local path"):
        extract_topk(object(), tokenizer, ["the cat"])
    with pytest.raises(InvalidInputError, match="model: .* is not a local directory"):
        extract_topk(str(tmp_path / "absent"), tokenizer, ["the cat"])
    with pytest.raises(InvalidInputError, match="text_column: 'text' is not a column"):
        extract_topk(model, tokenizer, datasets.Dataset.from_dict({"body": ["the cat"]}))


def test_docstring_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results = doctest.testmod(teacher)
    assert results.attempted > 0 and results.failed == 0
