"""Batch predictions inside Ray Data workers: JSONL lines in, JSONL lines out, in order.

``BatchPredictor`` is the ``map_batches`` callable class. It loads a model version through
the replicas' own code (``kinds.load``, then ``predictor.decode`` per row and
``predictor.predict_batch`` per batch), so a batch job answers what ``/predict`` answers.

Rows (one JSON object per line):

- ``{"id": ..., "args": {...}}``: the predictor's arguments, as ``args`` of ``/predict``;
  answered ``{"id": ..., "result": ...}`` with ``/predict``'s ``result``.
- sentence-transformer models also take ``{"id": ..., "text": "..."}``, answered
  ``{"id": ..., "embedding": [...]}``.
- a row that cannot be read or predicted is answered ``{"id": ..., "error": "..."}`` (``id``
  null when the line has none); the other rows of its batch are unaffected.

Each output batch is a table of ``line`` (the output row as JSON bytes, one per input row,
same order) and ``ok`` (false for error rows).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson

from serve_apps import kinds
from serve_apps.runtime import pick_device, use_ray_cpu_share

logger = logging.getLogger("modelyard.batch")

TEXT_KIND = "sentence-transformer"
# Rows predicted (and held as Python results) at once: a longer batch runs in slices of this.
# Twice the job's window (cluster.jobs.batch_job.SORT_ROWS), so a window is sorted as one slice.
MAX_WINDOW_ROWS = 8192
BAD_INPUT = (ValueError, TypeError, KeyError)


@dataclass
class Row:
    """One input line on its way through: the decoded item, then its result or error."""

    id: Any = None
    item: Any = None
    field: str = "result"  # the output key: "result" or "embedding"
    result: Any = None
    error: str | None = None


def _fail(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def decode_line(predictor: kinds.Predictor, kind: str, line: str) -> Row:
    """Parse one input line and decode it with the predictor; errors stay on the row."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return Row(error=f"the line is not JSON: {exc}")
    if not isinstance(obj, dict):
        return Row(error="each line must be a JSON object")
    row = Row(id=obj.get("id"))
    try:
        if isinstance(obj.get("args"), dict):
            row.item = predictor.decode(obj["args"])
        elif kind == TEXT_KIND and isinstance(obj.get("text"), str):
            row.item, row.field = predictor.decode({"texts": [obj["text"]]}), "embedding"
        else:
            row.error = 'each line needs "args", an object' + (
                ' (or "text", a string)' if kind == TEXT_KIND else ""
            )
    except BAD_INPUT as exc:
        row.error = _fail(exc)
    return row


def predict_rows(predictor: kinds.Predictor, rows: list[Row]) -> None:
    """One ``predict_batch`` call for the rows without errors; if it raises, each row again
    on its own, so one bad row fails alone."""
    good = [r for r in rows if r.error is None]
    if not good:
        return
    try:
        results = predictor.predict_batch([r.item for r in good])
    except Exception:
        for row in good:
            try:
                row.result = predictor.predict_batch([row.item])[0]
            except Exception as exc:
                row.error = _fail(exc)
        return
    for row, result in zip(good, results, strict=True):
        row.result = result


def encode_row(row: Row) -> bytes:
    """The output line of one row (without its newline)."""
    if row.error is None:
        value = row.result["embeddings"][0] if row.field == "embedding" else row.result
        try:
            return orjson.dumps({"id": row.id, row.field: value}, option=orjson.OPT_SERIALIZE_NUMPY)
        except TypeError as exc:
            row.error = f"the result is not JSON-serializable: {exc}"
    return orjson.dumps({"id": row.id, "error": row.error})


def predict_lines(
    predictor: kinds.Predictor, kind: str, lines: list[str], per_call: int | None = None
) -> list[Row]:
    """Input lines -> rows with their results or errors, in the same order.

    The model runs on ``per_call`` rows at a time, taken in order of line length: rows of a
    similar size share a call, so a padded batch (text models) wastes little compute.
    """
    rows = [decode_line(predictor, kind, line) for line in lines]
    per_call = per_call or len(rows) or 1
    order = sorted(range(len(rows)), key=lambda i: len(lines[i]))
    for start in range(0, len(order), per_call):
        predict_rows(predictor, [rows[i] for i in order[start : start + per_call]])
    return rows


class BatchPredictor:
    """``Dataset.map_batches`` callable class: a ``text`` column of input lines in, a table of
    ``line`` and ``ok`` out; the model runs on ``per_call`` rows at a time."""

    def __init__(self, spec: dict[str, Any], per_call: int | None = None) -> None:
        use_ray_cpu_share()  # threads and device by the replicas' rule (serve_apps.runtime)
        self.kind, self.per_call = spec["kind"], per_call
        start = time.perf_counter()
        self.predictor = kinds.load(spec, pick_device())
        if per_call:
            # A call's rows are encoded in chunks of the job's batch_size, not the
            # predictor's serving default (a replica sets it from its deployment instead).
            self.predictor.max_batch_size = per_call
        logger.info("model v%s loaded in %.1fs", spec.get("version"), time.perf_counter() - start)

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        lines = batch.column("text").to_pylist()
        out: list[bytes] = []
        ok: list[bool] = []
        for start in range(0, len(lines), MAX_WINDOW_ROWS):
            window = lines[start : start + MAX_WINDOW_ROWS]
            rows = predict_lines(self.predictor, self.kind, window, self.per_call)
            out += [encode_row(row) for row in rows]  # may turn a row into an error
            ok += [row.error is None for row in rows]
        return pa.table(
            {"line": pa.array(out, type=pa.binary()), "ok": pa.array(ok, type=pa.bool_())}
        )
