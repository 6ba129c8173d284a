"""Plain-Python reference implementation of FuseLLM token alignment (Steps 1-3).

FuseLLM (Wan et al., "Knowledge Fusion of Large Language Models", ICLR 2024, arXiv:2401.10491)
trains a target language model on the next-token distributions of source models that use other
tokenizers. Before a source distribution can be used, it is moved onto the target vocabulary:

1. :func:`mined_map` maps every source token to the target token at minimum edit distance (MinED).
2. :func:`dtw` aligns the source and target tokenizations of one text by dynamic time warping.
3. :func:`align_text` turns the source's top-k lists into lists over target ids, position by
   position, with a one-hot stand-in where no source position matches.

This module reproduces the published behaviour exactly, quirks included, and keeps the published
cost structure: a dense DTW matrix with one edit-distance call per cell, and a brute-force MinED
search over the whole target vocabulary. It uses only the standard library. It is deliberately
slow: it is the oracle that the fast implementation is checked against and the baseline it is
timed against.

>>> dtw(["\u2581the", "\u2581cat"], ["\u0120the", "\u0120c", "at"],
...     source_marker=SENTENCEPIECE_MARKER, target_marker=BYTE_LEVEL_MARKER)
[[0], [1], [1]]
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

__all__ = [
    "BYTE_LEVEL_MARKER",
    "SENTENCEPIECE_MARKER",
    "STATUS_EMPTY",
    "STATUS_MATCHED",
    "STATUS_ONEHOT",
    "align_batch",
    "align_text",
    "dtw",
    "edit_distance",
    "mined_map",
]

SENTENCEPIECE_MARKER = "\u2581"
"""Leading-space marker of SentencePiece vocabularies (``▁``, as in Llama)."""

BYTE_LEVEL_MARKER = "\u0120"
"""Leading-space marker of byte-level BPE vocabularies (``Ġ``, as in GPT-2, GPT-NeoX, MPT)."""

STATUS_EMPTY = 0
"""The position has no entries (every candidate dropped, or no next token for the stand-in)."""

STATUS_MATCHED = 1
"""The position carries the aligned source position's top-k list, remapped to target ids."""

STATUS_ONEHOT = 2
"""The position carries a one-hot stand-in on a target token with logit 1.0."""

Distance = Callable[[str, str], int]
AlignedPosition = tuple[int, list[tuple[int, float]]]

_VOCAB_ALIGN_CHOICES = ("soft", "hard")
_ONEHOT_CHOICES = ("next", "current")


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance with unit costs, over Unicode code points.

    Args:
        a: First string.
        b: Second string.

    Returns:
        The least number of single code point insertions, deletions and substitutions that turn
        ``a`` into ``b``.

    Raises:
        TypeError: If ``a`` or ``b`` is not a ``str``.

    >>> edit_distance("kitten", "sitting")
    3
    >>> edit_distance("\u2581the", "the")
    1
    """
    if not isinstance(a, str):
        raise TypeError(f"a must be a str, got {type(a).__name__}")
    if not isinstance(b, str):
        raise TypeError(f"b must be a str, got {type(b).__name__}")
    # The distance is symmetric; iterating over the longer string keeps the rows short.
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for row, char_a in enumerate(a, start=1):
        current = [row]
        for column, char_b in enumerate(b, start=1):
            current.append(
                min(
                    previous[column] + 1,
                    current[column - 1] + 1,
                    previous[column - 1] + (char_a != char_b),
                )
            )
        previous = current
    return previous[-1]


def mined_map(
    source_tokens: Sequence[str],
    target_tokens: Sequence[str],
    *,
    source_marker: str,
    target_marker: str,
    distance: Distance = edit_distance,
) -> tuple[list[int], list[int]]:
    """Maps every source token to the target token at minimum edit distance (Step 1, MinED).

    Each source token has its space marker replaced by the target's. If the result is a target
    token, it maps there (the lowest id, if the string occurs more than once) at distance 0.
    Otherwise every target token is tried in id order, markers kept, and the first one at the
    smallest distance wins, so ties go to the lowest target id.

    Args:
        source_tokens: The token string of every source id.
        target_tokens: The token string of every target id.
        source_marker: The source vocabulary's leading-space marker.
        target_marker: The target vocabulary's leading-space marker.
        distance: The string distance; Levenshtein distance by default.

    Returns:
        ``(target_ids, distances)``: for each source id, its image in the target vocabulary and
        the distance to that image.

    Raises:
        ValueError: If ``target_tokens`` is empty, or a marker is empty.
        TypeError: If a marker is not a ``str``.

    >>> mined_map(["\u0120cat", "\u0120cut"], ["\u2581cot", "\u2581cat"],
    ...           source_marker=BYTE_LEVEL_MARKER, target_marker=SENTENCEPIECE_MARKER)
    ([1, 0], [0, 1])
    """
    _check_marker("source_marker", source_marker)
    _check_marker("target_marker", target_marker)
    if len(target_tokens) == 0:
        raise ValueError("target_tokens must not be empty: every source token needs an image")
    lowest_target_id = _lowest_id_of_each_string(target_tokens)
    images: list[int] = []
    distances: list[int] = []
    for source_token in source_tokens:
        renamed = source_token.replace(source_marker, target_marker)
        exact_id = lowest_target_id.get(renamed)
        if exact_id is not None:
            images.append(exact_id)
            distances.append(0)
            continue
        best_id, best_distance = -1, math.inf
        for target_id, target_token in enumerate(target_tokens):
            candidate_distance = distance(renamed, target_token)
            if candidate_distance < best_distance:
                best_id, best_distance = target_id, candidate_distance
        images.append(best_id)
        distances.append(best_distance)
    return images, distances


def dtw(
    source_strs: Sequence[str],
    target_strs: Sequence[str],
    *,
    source_marker: str,
    target_marker: str,
    distance: Distance = edit_distance,
) -> list[list[int]]:
    """Aligns two tokenizations of one text by dynamic time warping (Step 2).

    The cost of pairing source token ``i`` with target token ``j`` is the distance between the two
    strings, each with its own space marker deleted. The accumulated cost matrix is filled
    densely; the path is then traced back from the last pair of tokens to the first, moving to the
    cheapest of the diagonal, upper and left neighbours (in that order on ties).

    Args:
        source_strs: The source token strings of the text, in order.
        target_strs: The target token strings of the same text, in order.
        source_marker: The source vocabulary's leading-space marker.
        target_marker: The target vocabulary's leading-space marker.
        distance: The string distance; Levenshtein distance by default.

    Returns:
        For each target position, the sorted source positions aligned with it. Every target
        position gets at least one, unless ``source_strs`` is empty (then every list is empty).

    Raises:
        ValueError: If a marker is empty.
        TypeError: If a marker is not a ``str``.

    >>> dtw(["\u2581a", "b"], ["\u0120ab"],
    ...     source_marker=SENTENCEPIECE_MARKER, target_marker=BYTE_LEVEL_MARKER)
    [[0, 1]]
    """
    _check_marker("source_marker", source_marker)
    _check_marker("target_marker", target_marker)
    n, m = len(source_strs), len(target_strs)
    if n == 0 or m == 0:
        return [[] for _ in range(m)]
    sources = [token.replace(source_marker, "") for token in source_strs]
    targets = [token.replace(target_marker, "") for token in target_strs]

    accumulated = [[math.inf] * (m + 1) for _ in range(n + 1)]
    accumulated[0][0] = 0.0
    for i in range(n):
        for j in range(m):
            accumulated[i + 1][j + 1] = distance(sources[i], targets[j]) + min(
                accumulated[i][j + 1], accumulated[i + 1][j], accumulated[i][j]
            )
    # The backtrace indexes the matrix without its border row and column.
    inner = [row[1:] for row in accumulated[1:]]

    path = []
    i, j = n - 1, m - 1
    while i > 0 or j > 0:
        path.append((i, j))
        diagonal = inner[i - 1][j - 1] if i > 0 and j > 0 else math.inf
        up = inner[i - 1][j] if i > 0 else math.inf
        left = inner[i][j - 1] if j > 0 else math.inf
        cheapest = min(diagonal, up, left)
        if diagonal == cheapest:
            i, j = i - 1, j - 1
        elif up == cheapest:
            i -= 1
        else:
            j -= 1
    path.append((0, 0))

    sources_of_target: list[list[int]] = [[] for _ in range(m)]
    for i, j in path:
        sources_of_target[j].append(i)
    return [sorted(positions) for positions in sources_of_target]


def align_text(
    source_tokens: Sequence[str],
    target_tokens: Sequence[str],
    target_ids: Sequence[int],
    source_ids: Sequence[int],
    topk_ids: Sequence[Sequence[int]],
    topk_logits: Sequence[Sequence[float]],
    *,
    source_marker: str,
    target_marker: str,
    vocab_align: Literal["soft", "hard"] = "soft",
    onehot: Literal["next", "current"] = "next",
    vocab_map: Sequence[int] | None = None,
    distance: Distance = edit_distance,
) -> list[AlignedPosition]:
    """Moves one text's source top-k lists onto the target tokenization (Steps 2 and 3).

    The two tokenizations are aligned with :func:`dtw`. A target position aligned with exactly one
    source position whose token matches its own takes that position's top-k list, each candidate
    mapped to a target id; repeats of a target id are dropped, the first one kept. Every other
    target position gets a one-hot stand-in.

    A source token matches the target token ``t`` if, with its space marker replaced by the
    target's, it equals ``t`` or (``"soft"`` only) its MinED image is ``t``. As published, a
    byte-level source token at the first position gains the target marker if ``t`` starts with it.
    Candidates map to the target token with the identical string, or are dropped if there is none
    (``"hard"``), or map to their MinED image (``"soft"``).

    Args:
        source_tokens: The token string of every source id.
        target_tokens: The token string of every target id.
        target_ids: The text tokenized by the target.
        source_ids: The text tokenized by the source.
        topk_ids: For each source position, the source's candidate token ids; an id below 0 is an
            empty slot and is skipped.
        topk_logits: For each source position, the logits of those candidates.
        source_marker: The source vocabulary's leading-space marker.
        target_marker: The target vocabulary's leading-space marker.
        vocab_align: ``"soft"`` (MinED, the paper's default) or ``"hard"`` (identical strings).
        onehot: Where the stand-in puts its mass: ``"next"``, the next target token (none at the
            last position), or ``"current"``, the target token itself (the published
            implementation's off-by-one behaviour).
        vocab_map: The MinED image of every source id, as the first list returned by
            :func:`mined_map`. Computed when needed and not given.
        distance: The string distance for DTW and MinED; Levenshtein distance by default.

    Returns:
        For each target position, ``(status, entries)``: the status is :data:`STATUS_MATCHED`,
        :data:`STATUS_ONEHOT` or :data:`STATUS_EMPTY` (no entries), and the entries are
        ``(target_id, logit)`` pairs with the logits unchanged.

    Raises:
        ValueError: If ``vocab_align`` or ``onehot`` is not one of its choices, an id is outside
            its vocabulary, ``topk_ids`` or ``topk_logits`` does not have one row per source
            position of matching lengths, ``vocab_map`` does not have one entry per source id, or
            a marker is empty.
        TypeError: If an id is not an integer, a logit is not a real number, or a marker is not a
            ``str``.

    >>> source = ["\u2581the", "\u2581cat", "\u2581dog"]
    >>> target = ["\u0120the", "\u0120cat", "\u0120c", "at"]
    >>> align_text(source, target, [0, 1], [0, 1], [[1, 2], [0, 1]], [[2.0, 1.0], [0.5, 0.25]],
    ...            source_marker=SENTENCEPIECE_MARKER, target_marker=BYTE_LEVEL_MARKER,
    ...            vocab_align="hard")
    [(1, [(1, 2.0)]), (1, [(0, 0.5), (1, 0.25)])]
    >>> align_text(source, target, [0, 2, 3], [0, 1], [[1, 2], [0, 1]], [[2.0, 1.0], [0.5, 0.25]],
    ...            source_marker=SENTENCEPIECE_MARKER, target_marker=BYTE_LEVEL_MARKER,
    ...            vocab_align="hard")
    [(1, [(1, 2.0)]), (2, [(3, 1.0)]), (0, [])]
    """
    _check_choice("vocab_align", vocab_align, _VOCAB_ALIGN_CHOICES)
    _check_choice("onehot", onehot, _ONEHOT_CHOICES)
    _check_marker("source_marker", source_marker)
    _check_marker("target_marker", target_marker)
    target_ids = _checked_ids("target_ids", target_ids, len(target_tokens))
    source_ids = _checked_ids("source_ids", source_ids, len(source_tokens))
    candidates_by_position = _checked_topk(
        topk_ids, topk_logits, len(source_ids), len(source_tokens)
    )
    if vocab_map is not None:
        vocab_map = _checked_vocab_map(vocab_map, len(source_tokens), len(target_tokens))

    if vocab_align == "soft":
        if vocab_map is None:
            vocab_map = _mined_images(source_tokens, target_tokens, source_marker, target_marker, distance)
        # Keyed by renamed string as published: a later source id overwrites an earlier one.
        image_of_renamed = {
            token.replace(source_marker, target_marker): target_tokens[vocab_map[source_id]]
            for source_id, token in enumerate(source_tokens)
        }

        def candidate_image(candidate: int) -> int | None:
            return vocab_map[candidate]

        def is_match(renamed: str, target: str) -> bool:
            return renamed == target or image_of_renamed.get(renamed) == target

    else:
        lowest_target_id = _lowest_id_of_each_string(target_tokens)

        def candidate_image(candidate: int) -> int | None:
            return lowest_target_id.get(
                source_tokens[candidate].replace(source_marker, target_marker)
            )

        def is_match(renamed: str, target: str) -> bool:
            return renamed == target

    aligned = dtw(
        [source_tokens[source_id] for source_id in source_ids],
        [target_tokens[target_id] for target_id in target_ids],
        source_marker=source_marker,
        target_marker=target_marker,
        distance=distance,
    )

    result: list[AlignedPosition] = []
    for j, target_id in enumerate(target_ids):
        target = target_tokens[target_id]
        if len(aligned[j]) == 1:
            source_position = aligned[j][0]
            renamed = source_tokens[source_ids[source_position]].replace(
                source_marker, target_marker
            )
            # Byte-level tokenizers give the first word of a text no space marker; SentencePiece
            # ones do. The published code patches this at the first position only.
            if (
                source_marker == BYTE_LEVEL_MARKER
                and j == 0
                and target.startswith(target_marker)
                and not renamed.startswith(target_marker)
            ):
                renamed = target_marker + renamed
            if is_match(renamed, target):
                entries = _first_of_each_id(
                    (candidate_image(candidate), logit)
                    for candidate, logit in candidates_by_position[source_position]
                )
                result.append((STATUS_MATCHED if entries else STATUS_EMPTY, entries))
                continue
        if onehot == "current":
            result.append((STATUS_ONEHOT, [(target_id, 1.0)]))
        elif j + 1 < len(target_ids):
            result.append((STATUS_ONEHOT, [(target_ids[j + 1], 1.0)]))
        else:
            result.append((STATUS_EMPTY, []))
    return result


def align_batch(
    source_tokens: Sequence[str],
    target_tokens: Sequence[str],
    target_ids: Sequence[Sequence[int]],
    source_ids: Sequence[Sequence[int]],
    topk_ids: Sequence[Sequence[Sequence[int]]],
    topk_logits: Sequence[Sequence[Sequence[float]]],
    *,
    source_marker: str,
    target_marker: str,
    vocab_align: Literal["soft", "hard"] = "soft",
    onehot: Literal["next", "current"] = "next",
    vocab_map: Sequence[int] | None = None,
    distance: Distance = edit_distance,
) -> list[list[AlignedPosition]]:
    """Runs :func:`align_text` on every text of a batch, computing the MinED map at most once.

    Args:
        source_tokens: The token string of every source id.
        target_tokens: The token string of every target id.
        target_ids: For each text, its target tokenization.
        source_ids: For each text, its source tokenization.
        topk_ids: For each text, its source candidate ids, one row per source position.
        topk_logits: For each text, the logits of those candidates.
        source_marker: The source vocabulary's leading-space marker.
        target_marker: The target vocabulary's leading-space marker.
        vocab_align: ``"soft"`` or ``"hard"``, as in :func:`align_text`.
        onehot: ``"next"`` or ``"current"``, as in :func:`align_text`.
        vocab_map: The MinED image of every source id; computed when needed and not given.
        distance: The string distance for DTW and MinED; Levenshtein distance by default.

    Returns:
        For each text, what :func:`align_text` returns for it.

    Raises:
        ValueError: If the per-text arguments differ in length, or for any reason
            :func:`align_text` gives (the message then names the text's index).
        TypeError: For any reason :func:`align_text` gives (the message names the text's index).

    >>> align_batch(["a", "b"], ["a", "b"], [[0, 1], [1]], [[0, 1], [1]],
    ...             [[[1], [0]], [[0]]], [[[0.5], [0.25]], [[2.0]]],
    ...             source_marker=SENTENCEPIECE_MARKER, target_marker=SENTENCEPIECE_MARKER)
    [[(1, [(1, 0.5)]), (1, [(0, 0.25)])], [(1, [(0, 2.0)])]]
    """
    _check_choice("vocab_align", vocab_align, _VOCAB_ALIGN_CHOICES)
    text_count = len(target_ids)
    for name, per_text in (
        ("source_ids", source_ids),
        ("topk_ids", topk_ids),
        ("topk_logits", topk_logits),
    ):
        if len(per_text) != text_count:
            raise ValueError(f"{name} has {len(per_text)} texts but target_ids has {text_count}")
    if vocab_align == "soft" and vocab_map is None and text_count > 0:
        vocab_map = _mined_images(source_tokens, target_tokens, source_marker, target_marker, distance)
    options = {"source_marker": source_marker, "target_marker": target_marker, "vocab_align": vocab_align,
               "onehot": onehot, "vocab_map": vocab_map, "distance": distance}
    results = []
    for text_index in range(text_count):
        try:
            text = (target_ids[text_index], source_ids[text_index], topk_ids[text_index], topk_logits[text_index])
            results.append(align_text(source_tokens, target_tokens, *text, **options))
        except (TypeError, ValueError) as error:
            raise type(error)(f"text {text_index}: {error}") from error
    return results


def _mined_images(
    source_tokens: Sequence[str], target_tokens: Sequence[str], source_marker: str, target_marker: str,
    distance: Distance,
) -> list[int]:
    """The MinED image of every source id (the first list of :func:`mined_map`)."""
    return mined_map(source_tokens, target_tokens, source_marker=source_marker, target_marker=target_marker,
                     distance=distance)[0]


def _lowest_id_of_each_string(tokens: Sequence[str]) -> dict[str, int]:
    lowest_id: dict[str, int] = {}
    for token_id, token in enumerate(tokens):
        lowest_id.setdefault(token, token_id)
    return lowest_id


def _first_of_each_id(entries: Iterable[tuple[int | None, float]]) -> list[tuple[int, float]]:
    """Keeps the first entry for each target id, dropping entries without one."""
    kept: list[tuple[int, float]] = []
    seen: set[int] = set()
    for target_id, logit in entries:
        if target_id is None or target_id in seen:
            continue
        seen.add(target_id)
        kept.append((target_id, logit))
    return kept


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        expected = " or ".join(repr(choice) for choice in choices)
        raise ValueError(f"{name} must be {expected}, got {value!r}")


def _check_marker(name: str, marker: object) -> None:
    if not isinstance(marker, str):
        raise TypeError(f"{name} must be a str, got {type(marker).__name__}")
    # Replacing the empty string would insert the other marker between every two characters.
    if not marker:
        raise ValueError(f"{name} must not be empty")


def _as_int(name: str, value: object) -> int:
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None


def _checked_ids(name: str, ids: Sequence[int], vocab_size: int) -> list[int]:
    checked = []
    for position, value in enumerate(ids):
        token_id = _as_int(f"{name}[{position}]", value)
        if not 0 <= token_id < vocab_size:
            raise ValueError(
                f"{name}[{position}] = {token_id} is outside the vocabulary of {vocab_size} tokens"
            )
        checked.append(token_id)
    return checked


def _checked_topk(
    topk_ids: Sequence[Sequence[int]],
    topk_logits: Sequence[Sequence[float]],
    source_length: int,
    source_vocab_size: int,
) -> list[list[tuple[int, float]]]:
    """Returns, per source position, its non-empty (candidate id, logit) slots in order."""
    if len(topk_ids) != source_length:
        raise ValueError(
            f"topk_ids has {len(topk_ids)} rows but source_ids has {source_length} ids"
        )
    if len(topk_logits) != source_length:
        raise ValueError(
            f"topk_logits has {len(topk_logits)} rows but source_ids has {source_length} ids"
        )
    rows = []
    for position, (id_row, logit_row) in enumerate(zip(topk_ids, topk_logits)):
        if len(id_row) != len(logit_row):
            raise ValueError(
                f"topk_logits[{position}] has {len(logit_row)} entries "
                f"but topk_ids[{position}] has {len(id_row)}"
            )
        row = []
        for slot, (raw_id, raw_logit) in enumerate(zip(id_row, logit_row)):
            candidate = _as_int(f"topk_ids[{position}][{slot}]", raw_id)
            if candidate >= source_vocab_size:
                raise ValueError(
                    f"topk_ids[{position}][{slot}] = {candidate} is outside the source vocabulary "
                    f"of {source_vocab_size} tokens"
                )
            if not isinstance(raw_logit, numbers.Real):
                raise TypeError(
                    f"topk_logits[{position}][{slot}] must be a real number, got {raw_logit!r}"
                )
            if candidate >= 0:
                row.append((candidate, float(raw_logit)))
        rows.append(row)
    return rows


def _checked_vocab_map(
    vocab_map: Sequence[int], source_vocab_size: int, target_vocab_size: int
) -> list[int]:
    if len(vocab_map) != source_vocab_size:
        raise ValueError(
            f"vocab_map has {len(vocab_map)} entries but source_tokens has {source_vocab_size}"
        )
    return _checked_ids("vocab_map", vocab_map, target_vocab_size)
