"""Training pairs: load, validate and split (anchor, positive) examples.

A dataset is JSONL, one ``{"anchor": "...", "positive": "..."}`` object a line (a local path,
a ``file://`` URI, or any URI pyarrow can open, e.g. ``s3://bucket/pairs.jsonl``), or an
inline list of such objects (at most ``MAX_INLINE_PAIRS``). Every problem is a ``ValueError``
that says where it is (``line 7`` / ``pairs[6]``) and what to change. Nothing here needs Ray.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

# The pair checks are the API's too: the request schema validates inline pairs with them.
from cluster.schemas.training import (  # noqa: F401  (re-exported for the trainer)
    FIELDS,
    MAX_INLINE_PAIRS,
    MAX_TEXT_CHARS,
    Pair,
    check_pair,
    parse_inline,
)

MAX_EVAL_PAIRS = 5_000  # retrieval over N held-out pairs costs N x N similarities


def parse_jsonl(lines: Iterable[str]) -> list[Pair]:
    """Pairs from JSONL text; blank lines are skipped, line numbers start at 1."""
    pairs = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"line {number}: not valid JSON ({exc.msg} at column {exc.colno})"
            ) from None
        pairs.append(check_pair(item, f"line {number}"))
    if not pairs:
        raise ValueError("the dataset has no pairs; give at least 2 (anchor, positive) lines")
    return pairs


def read_lines(uri: str) -> list[str]:
    """The lines of a local path, ``file://`` URI or pyarrow-readable URI.

    A plain path is opened as it is (no ``~``, no percent-decoding): the API's checker hands
    the job the absolute path it checked. A ``file://`` URI is percent-decoded once, as the
    checker decodes it.
    """
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        path = Path(unquote(parsed.path) if parsed.scheme else uri)
        if not path.is_file():
            raise ValueError(f"dataset {uri!r} does not exist or is not a file")
        return path.read_text(encoding="utf-8").splitlines()
    import pyarrow.fs

    try:
        fs, fs_path = pyarrow.fs.FileSystem.from_uri(uri)
        with fs.open_input_stream(fs_path) as stream:
            return stream.read().decode("utf-8").splitlines()
    except (OSError, pyarrow.ArrowException) as exc:
        raise ValueError(f"cannot read dataset {uri!r}: {exc}") from exc


def load_pairs(uri: str | None = None, pairs: Sequence[Any] | None = None) -> list[Pair]:
    """Pairs from exactly one of a JSONL ``uri`` and an inline ``pairs`` list."""
    if (uri is None) == (pairs is None):
        raise ValueError('give exactly one of {"uri": ...} and {"pairs": [...]}')
    if pairs is not None:
        return parse_inline(pairs)
    try:
        lines = read_lines(uri)
    except UnicodeDecodeError as exc:
        raise ValueError(f"dataset {uri!r} is not UTF-8 text: {exc}") from exc
    return parse_jsonl(lines)


def split_pairs(
    pairs: Sequence[Pair], eval_fraction: float, seed: int
) -> tuple[list[Pair], list[Pair]]:
    """A deterministic (train, eval) split: the same pairs and seed give the same split.

    ``eval_fraction`` 0 gives no eval pairs. Otherwise eval gets at least 2 pairs (retrieval
    among one candidate says nothing) and at most ``MAX_EVAL_PAIRS``; train keeps at least 2
    (in-batch negatives).
    """
    if not 0 <= eval_fraction < 1:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_eval = 0 if eval_fraction == 0 else max(2, round(len(pairs) * eval_fraction))
    n_eval = min(n_eval, MAX_EVAL_PAIRS)
    if len(pairs) - n_eval < 2:
        raise ValueError(
            f"{len(pairs)} pairs leave fewer than 2 for training after holding out "
            f"{n_eval} for evaluation; add pairs or lower eval_fraction"
        )
    held_out = sorted(order[:n_eval])
    kept = sorted(order[n_eval:])
    return [pairs[i] for i in kept], [pairs[i] for i in held_out]
