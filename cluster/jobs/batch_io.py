"""Where batch predictions read and write, and the checks made before a job is queued.

``input_uri`` and ``output_uri`` go through the one path and URI checker (``cluster.uris``):

- ``input_uri``: a path relative to the storage root (``batch/in.jsonl``), an absolute path
  or ``file://`` URI inside it, or a URI of a filesystem ``pyarrow.fs`` opens
  (``s3://bucket/key``, ``gs://...``); never the registry database or the key file.
- ``output_uri``: a path relative to ``<storage root>/outputs`` (``batch/out.jsonl`` is
  written to ``<root>/outputs/batch/out.jsonl``), an absolute path or ``file://`` URI under
  that folder, or a remote URI; never a file modelyard owns, whatever ``overwrite`` says.

``check_request`` turns both into the forms the job opens (absolute plain paths, or the
remote URIs) or raises ``InvalidInput`` naming the field. The output is written to
``<output>.partial`` and moved into place when the job ends, so a failed job leaves no
half-written file at ``output_uri``.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

from cluster import errors, uris
from cluster.schemas import BatchPredictCreate

CHUNK = 1 << 20
# What str.splitlines() splits on; a piece ending in one of these is a whole line.
LINE_ENDS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def is_local(uri: str) -> bool:
    return uris.is_local(uri)


def filesystem(uri: str, field: str = "uri") -> tuple[Any, str]:
    """``(pyarrow filesystem, path)`` for a normalized URI."""
    import pyarrow as pa
    import pyarrow.fs as pafs

    if is_local(uri):
        return pafs.LocalFileSystem(), uris.reader_path(uri)
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise errors.InvalidInput(f"{field} '{uri}' cannot be opened: {exc}") from None


def check_request(req: BatchPredictCreate, root: str | Path) -> BatchPredictCreate:
    """``req`` with absolute URIs, once the input is a readable file and the output may be
    written; ``InvalidInput`` (422) naming the field otherwise."""
    import pyarrow.fs as pafs

    storage = uris.StorageRoot.of(root)
    source = uris.check_input(req.input_uri, "input_uri", storage)
    target = uris.check_output(req.output_uri, "output_uri", storage)
    if source == target:
        raise errors.InvalidInput("output_uri must differ from input_uri")
    fs, path = filesystem(source, "input_uri")
    kind = _info(fs, path, "input_uri").type
    if kind != pafs.FileType.File:
        what = "is a directory" if kind == pafs.FileType.Directory else "does not exist"
        raise errors.InvalidInput(f"input_uri '{req.input_uri}' {what}; give a JSONL file")
    fs, path = filesystem(target, "output_uri")
    kind = _info(fs, path, "output_uri").type
    if kind == pafs.FileType.Directory:
        raise errors.InvalidInput(f"output_uri '{req.output_uri}' is a directory; name a file")
    if kind == pafs.FileType.File and not req.overwrite:
        raise errors.InvalidInput(
            f"output_uri '{req.output_uri}' exists; pass overwrite=true or choose another path"
        )
    if is_local(target):
        _check_parent(Path(target), req.output_uri)
    return req.model_copy(update={"input_uri": source, "output_uri": target})


def _info(fs: Any, path: str, field: str) -> Any:
    import pyarrow as pa

    try:
        return fs.get_file_info(path)
    except (pa.ArrowException, OSError) as exc:
        raise errors.InvalidInput(f"{field} '{path}' cannot be read: {exc}") from None


def _check_parent(path: Path, uri: str) -> None:
    """The output's directory exists or can be made (no file stands in its way)."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise errors.InvalidInput(f"output_uri '{uri}': {parent} is not a directory")
            return


def count_rows(uri: str) -> int:
    """Non-blank lines, split as ``ray.data.read_text`` splits them (``str.splitlines``),
    streamed so a large input is never held whole."""
    fs, path = filesystem(uri)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    count, carry = 0, ""
    with fs.open_input_stream(path) as stream:
        while chunk := stream.read(CHUNK):
            pieces = (carry + decoder.decode(chunk)).splitlines(keepends=True)
            carry = pieces.pop() if pieces and pieces[-1][-1] not in LINE_ENDS else ""
            count += sum(1 for p in pieces if p.strip())
    tail = carry + decoder.decode(b"", final=True)
    return count + sum(1 for p in tail.splitlines() if p.strip())


@contextmanager
def open_output(uri: str) -> Iterator[IO[bytes]]:
    """A binary stream to ``<uri>.partial``, moved to ``uri`` when the block ends without
    an error (and deleted when it raises)."""
    fs, path = filesystem(uri)
    partial = f"{path}.partial"
    if is_local(uri):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        with fs.open_output_stream(partial) as stream:
            yield stream
    except BaseException:
        with suppress(OSError):
            fs.delete_file(partial)
        raise
    fs.move(partial, path)
