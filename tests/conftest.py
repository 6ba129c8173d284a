import json
import sys
from pathlib import Path

import pytest

# Test helper modules (real tokenizers, shared strategies) live beside the tests.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A corpus file and three model directories with three different vocabularies (two families),
    shared by the tests of the command."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from demo_models import TINY, demo_corpus, save_models

    root = tmp_path_factory.mktemp("pipeline")
    corpus = demo_corpus(TINY, 40)
    corpus_path = root / "corpus.jsonl"
    corpus_path.write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus), encoding="utf-8")
    other_corpus = root / "other.jsonl"
    other_corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus[:20]), encoding="utf-8")
    paths = {"corpus": corpus_path, "other_corpus": other_corpus}
    paths.update(save_models(root, corpus, TINY, [("target", "sp_bpe", "llama", 300),
                                                  ("source_a", "byte_bpe", "gpt2", 300),
                                                  ("source_b", "sp_bpe", "llama", 260)]))
    paths["root"] = root
    return paths
