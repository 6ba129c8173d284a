"""Real texts for the alignment tests and benchmarks, made offline: edge cases, English help text and
Python source of the standard library."""

from __future__ import annotations

import sysconfig
from pathlib import Path

EDGE_CASE_TEXTS = (
    "Hello world",
    " Hello world, with a leading space.",
    "café naïve résumé façade Äpfel Straße",
    "cafe\u0301 written with a combining accent",
    "日本語のテキストを分割する。中文分词测试。한국어 텍스트.",
    "Ελληνικά, русский язык, العربية, עברית, हिन्दी, ไทย",
    "👍🏽🎉 family: 👨\u200d👩\u200d👧, flags 🇫🇷🇯🇵",
    "rare characters: ☃ ᚠᛇᚻ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \U0001f9ec ꙮ",
    "literal byte tokens in text: <0x0A> <0xFF> <0x>",
    "a  b   c    d     e      f",
    "   leading spaces and trailing ones   ",
    "\tone tab\t\ttwo tabs\t",
    "line one\nline two\n\n\nline five\r\nwindows line\r\n",
    "def square(x: int) -> int:\n    return x ** 2  # the square\n\n\nprint(square(12))\n",
    "if (a != b && c >= 0) { x += y[i]; } else { return -1; }",
    "3.14159 2,718 1e-10 -42 0xDEADBEEF 1234567890 007 ½ ⅞ ²",
    "I'm sure they'll say WE'VE done it; don't THEY'D?",
    "https://example.org/path/to/page?q=1&r=two#frag user@example.com",
    "zero\u200bwidth space, non\u00a0breaking space, soft\u00adhyphen",
    "Pneumonoultramicroscopicsilicovolcanoconiosis supercalifragilisticexpialidocious",
    "MIXED case Words, ALLCAPS and camelCaseIdentifiers_with_underscores",
    "--- *** ___ ... !!! ??? ((( ))) [[[ ]]] <<< >>>",
)


def _cut(text: str, max_chars: int) -> str:
    """``text`` up to the last line break within ``max_chars`` (or cut there if no line ends before)."""
    if len(text) <= max_chars:
        return text
    head = text[:max_chars]
    line_end = head.rfind("\n")
    return head[: line_end + 1] if line_end > 0 else head


_HELP_TOPICS = ("assignment", "class", "exceptions", "for", "formatstrings", "if", "lambda", "numbers",
                "specialnames", "strings", "truth", "with")
_STDLIB_MODULES = ("textwrap.py", "heapq.py", "bisect.py", "fractions.py", "shlex.py", "difflib.py",
                   "json/decoder.py", "string.py", "calendar.py", "statistics.py", "csv.py", "colorsys.py")


def sample_texts(*, max_chars: int = 2000) -> list[str]:
    """Real texts for alignment tests, made offline: :data:`EDGE_CASE_TEXTS`, then English help text
    from ``pydoc_data.topics`` and Python source files of the standard library, each cut to at most
    ``max_chars`` characters at a line break. All texts are non-empty.

    Args:
        max_chars: longest text kept from a help topic or source file.

    Raises:
        ValueError: ``max_chars`` is below 1.

    >>> len(sample_texts(max_chars=500)) > len(EDGE_CASE_TEXTS)
    True
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, got {max_chars}")
    from pydoc_data.topics import topics

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    help_texts = [topics[t] for t in _HELP_TOPICS if t in topics]
    sources = [(stdlib / m).read_text(encoding="utf-8") for m in _STDLIB_MODULES if (stdlib / m).is_file()]
    return [*EDGE_CASE_TEXTS, *(_cut(t, max_chars) for t in help_texts + sources)]
