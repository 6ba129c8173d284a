"""The hand-worked example that the reference's tests share: two small vocabularies, the MinED
map of one onto the other, and one text with its top-k lists."""

from __future__ import annotations

from fusellm_fast.reference import BYTE_LEVEL_MARKER as G, SENTENCEPIECE_MARKER as SP, align_text

# A target vocabulary with the SentencePiece marker and a source vocabulary with the byte-level one.
TARGET_VOCAB = [SP + "the", SP + "cat", SP + "dog", "s", SP + "a"]
SOURCE_VOCAB = [G + "the", G + "cat", G + "catz", G + "dig", G + "a", "s"]
# MinED of SOURCE_VOCAB onto TARGET_VOCAB, worked by hand (markers renamed to ▁ first):
#   0 ▁the  -> exact, id 0          3 ▁dig -> ▁dog at 1 (▁the, ▁cat: 3; ▁a: 3; s: 4) -> id 2
#   1 ▁cat  -> exact, id 1          4 ▁a   -> exact, id 4
#   2 ▁catz -> ▁cat at 1 (▁a: 3, ▁the, ▁dog: 4, s: 5) -> id 1     5 s -> exact, id 3
SOURCE_VOCAB_IMAGES = [0, 1, 1, 2, 4, 3]
SOURCE_VOCAB_DISTANCES = [0, 0, 1, 1, 0, 0]

# One text: target "▁the ▁cat", source "Ġthe Ġcatz".
# DTW costs (markers deleted): the/the 0, the/cat 3, catz/the 4, catz/cat 1, so the path is the
# diagonal and each target position has exactly one source position.
TEXT_TARGET_IDS = [0, 1]
TEXT_SOURCE_IDS = [0, 2]
TEXT_TOPK_IDS = [[1, 2, 3, -1], [5, 0, 4, 3]]
TEXT_TOPK_LOGITS = [[2.5, 1.5, 0.5, 0.0], [3.0, 2.0, 1.0, 0.25]]


def align_example(**options):
    return align_text(SOURCE_VOCAB, TARGET_VOCAB, TEXT_TARGET_IDS, TEXT_SOURCE_IDS, TEXT_TOPK_IDS, TEXT_TOPK_LOGITS,
                      source_marker=G, target_marker=SP, **options)
