"""Adapters for Hugging Face tokenizers and models: vocabularies and special tokens as plain
lists, and the loading of local model directories.

Nothing here imports ``transformers`` or ``torch`` until a loader is called.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .errors import InputTypeError, InvalidInputError
from .vocab_map import token_bytes

__all__ = [
    "load_model",
    "load_tokenizer",
    "model_or_tokenizer",
    "special_ids",
    "special_role_pairs",
    "token_byte_lengths",
    "tokenizer_vocabulary",
]


def tokenizer_vocabulary(tokenizer: Any, arg: str) -> list[str]:
    """Token strings of every id of a Hugging Face tokenizer, added tokens included."""
    if not hasattr(tokenizer, "convert_ids_to_tokens"):
        raise InputTypeError(f"{arg}: must be a tokenizer with convert_ids_to_tokens, got {type(tokenizer).__name__}")
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return [t if isinstance(t, str) else f"\x00<no token for id {i}>" for i, t in enumerate(tokens)]


_SPECIAL_ROLES = ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id")


def special_ids(tokenizer: Any) -> list[int]:
    """Ids of a tokenizer's special tokens and added special tokens (none if it tells none)."""
    ids = set(getattr(tokenizer, "all_special_ids", None) or ())
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    ids.update(i for i, token in added.items() if getattr(token, "special", False))
    return sorted(i for i in ids if isinstance(i, int) and 0 <= i < len(tokenizer))


def special_role_pairs(source_tokenizer: Any, target_tokenizer: Any) -> dict[int, int]:
    """Source id -> target id of the special tokens both tokenizers have in the same role."""
    pairs: dict[int, int] = {}
    for role in _SPECIAL_ROLES:
        source_id, target_id = getattr(source_tokenizer, role, None), getattr(target_tokenizer, role, None)
        if isinstance(source_id, int) and isinstance(target_id, int):
            pairs.setdefault(source_id, target_id)
    return pairs


def token_byte_lengths(tokenizer: Any) -> np.ndarray:
    """The UTF-8 byte length of every token of ``tokenizer`` (special tokens: 0)."""
    tokens = tokenizer_vocabulary(tokenizer, "tokenizer")
    return np.array([len(b) for b in token_bytes(tokens, special_ids=special_ids(tokenizer))], dtype=np.int64)


def load_tokenizer(path: str | os.PathLike[str], *, arg: str) -> Any:
    """A Hugging Face tokenizer from a local directory, or a ``PipelineError`` naming ``arg``."""
    path = Path(path)
    if not path.is_dir():
        raise _pipeline_error(f"{arg}: {str(path)!r} is not a directory")
    try:
        return _from_local("tokenizer", path)
    except (OSError, ValueError, KeyError) as error:
        raise _pipeline_error(f"{arg}: no tokenizer can be loaded from {str(path)!r} ({_first_line(error)})") from None


def load_model(path: str | os.PathLike[str], *, arg: str, tokenizer: Any, dtype: Any = None) -> Any:
    """A causal LM from a local directory, checked to cover every id of ``tokenizer``, or a
    ``PipelineError`` naming ``arg``."""
    try:
        model = _from_local("model", path, dtype=dtype)
    # A missing or broken file fails in transformers, json, safetensors or torch, each its own way.
    except Exception as error:
        raise _pipeline_error(f"{arg}: no causal LM can be loaded from {str(path)!r} ({_first_line(error)})") from None
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise _pipeline_error(
            f"{arg}: the tokenizer has {len(tokenizer)} tokens but the model only {rows} embedding rows; "
            "the tokenizer does not belong to this model"
        )
    return model


def model_or_tokenizer(value: Any, name: Literal["model", "tokenizer"]) -> Any:
    """A model or tokenizer object as given, or loaded from a local path; errors name ``name``."""
    if not isinstance(value, (str, os.PathLike)):
        import torch

        if name == "model" and not isinstance(value, torch.nn.Module):
            raise InputTypeError(f"model: must be a torch.nn.Module or a local path, got {type(value).__name__}")
        return value
    if not Path(value).is_dir():
        raise InvalidInputError(f"{name}: {os.fspath(value)!r} is not a local directory")
    return _from_local(name, value)


def _from_local(kind: Literal["model", "tokenizer"], path: str | os.PathLike[str], **options: Any) -> Any:
    import transformers

    loader = transformers.AutoModelForCausalLM if kind == "model" else transformers.AutoTokenizer
    return loader.from_pretrained(os.fspath(path), local_files_only=True, **options)


def _pipeline_error(message: str) -> Exception:
    # Imported here: the pipeline package imports this module.
    from .pipeline.errors import PipelineError

    return PipelineError(message)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
