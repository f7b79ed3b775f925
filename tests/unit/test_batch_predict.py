"""Batch predictions without Ray: row codec, URIs, line counts, the job's progress, refusal."""

from __future__ import annotations

import json

import orjson
import pyarrow as pa
import pytest

from cluster import errors
from cluster.jobs import batch_io
from cluster.jobs.batch_job import Canceled, Reporter, actor_options, windows, write_output
from cluster.jobs.batch_runner import refusal
from cluster.schemas import (
    BatchPredictCreate,
)
from serve_apps import batch, kinds
from serve_apps.batch import BatchPredictor, decode_line, encode_row, predict_lines


class FakeEmbedder(kinds.SentenceTransformerPredictor):
    """The real decode; predict_batch answers [len(text)] per text and fails on 'boom'."""

    def __init__(self) -> None:
        super().__init__({"kind": "sentence-transformer"}, "cpu")
        self.calls: list[int] = []
        self.texts: list[list[int]] = []

    def predict_batch(self, items):
        self.calls.append(len(items))
        self.texts.append([len(t) for texts in items for t in texts])
        if any("boom" in t for texts in items for t in texts):
            raise RuntimeError("model blew up")
        return [{"embeddings": [[float(len(t))] for t in texts]} for texts in items]


class FakeCustom(kinds.Predictor):
    def predict_batch(self, items):
        return [{"sum": a["x"] + a["y"]} for a in items]


def out(rows) -> list[dict]:
    return [json.loads(encode_row(r)) for r in rows]


def test_text_and_args_rows_keep_order_ids_and_per_row_errors():
    lines = [
        '{"id": 1, "text": "abc"}',
        '{"id": "two", "args": {"texts": ["a", "bcde"]}}',
        "not json",
        '{"id": 4, "text": 5}',
        '{"id": 5, "args": {"texts": []}}',
        "[1, 2]",
        '{"id": 7, "text": "hello"}',
    ]
    rows = predict_lines(FakeEmbedder(), "sentence-transformer", lines)
    got = out(rows)
    assert [r["id"] for r in got] == [1, "two", None, 4, 5, None, 7]
    assert got[0] == {"id": 1, "embedding": [3.0]}
    assert got[1] == {"id": "two", "result": {"embeddings": [[1.0], [4.0]]}}
    assert "not JSON" in got[2]["error"]
    assert '"text"' in got[3]["error"]
    assert "args.texts" in got[4]["error"]
    assert "JSON object" in got[5]["error"]
    assert got[6] == {"id": 7, "embedding": [5.0]}


def test_one_failing_row_fails_alone():
    model = FakeEmbedder()
    lines = [json.dumps({"id": i, "text": "boom" if i == 2 else "ok"}) for i in range(4)]
    got = out(predict_lines(model, "sentence-transformer", lines))
    assert [("error" in r) for r in got] == [False, False, True, False]
    assert got[2]["error"] == "RuntimeError: model blew up"
    assert model.calls == [4, 1, 1, 1, 1]  # the batch, then each row on its own


def test_rows_of_a_similar_size_share_a_model_call_and_come_back_in_order():
    model = FakeEmbedder()
    sizes = [7, 1, 5, 3, 8, 2, 6, 4]
    lines = [json.dumps({"id": i, "text": "x" * n}) for i, n in enumerate(sizes)]
    got = out(predict_lines(model, "sentence-transformer", lines, per_call=3))
    assert [r["id"] for r in got] == list(range(8))
    assert [r["embedding"] for r in got] == [[float(n)] for n in sizes]
    assert model.calls == [3, 3, 2]
    assert model.texts == [[1, 2, 3], [4, 5, 6], [7, 8]]  # by length, not by position


def test_other_kinds_take_args_only():
    model = FakeCustom({"kind": "custom"}, "cpu")
    got = out(predict_lines(model, "custom", ['{"id": 1, "args": {"x": 1, "y": 2}}']))
    assert got == [{"id": 1, "result": {"sum": 3}}]
    row = decode_line(model, "custom", '{"id": 2, "text": "hi"}')
    assert row.error == 'each line needs "args", an object'


def test_unserializable_result_is_a_row_error():
    row = decode_line(FakeCustom({"kind": "custom"}, "cpu"), "custom", '{"id": 1, "args": {}}')
    row.result = {"x": object()}
    assert "not JSON-serializable" in json.loads(encode_row(row))["error"]


# ------------------------------------------------------------------ URIs


def req(**fields) -> BatchPredictCreate:
    return BatchPredictCreate.model_validate(
        {"input_uri": "in.jsonl", "output_uri": "out.jsonl"} | fields
    )


def test_check_request_reads_from_the_root_and_writes_under_outputs(tmp_path):
    (tmp_path / "in.jsonl").write_text('{"id": 1, "text": "a"}\n')
    checked = batch_io.check_request(req(), tmp_path)
    assert checked.input_uri == str(tmp_path / "in.jsonl")
    assert checked.output_uri == str(tmp_path / "outputs" / "out.jsonl")


def test_check_request_names_the_field(tmp_path):
    (tmp_path / "in.jsonl").write_text('{"id": 1, "text": "a"}\n')
    outputs = tmp_path / "outputs"
    (tmp_path / "dir").mkdir()
    (outputs / "dir").mkdir(parents=True)
    (outputs / "out.jsonl").write_text("old")
    (outputs / "file").write_text("")
    cases = [
        (req(input_uri="missing.jsonl"), "input_uri 'missing.jsonl' does not exist"),
        (req(input_uri="dir"), "input_uri 'dir' is a directory"),
        (req(output_uri="dir"), "output_uri 'dir' is a directory"),
        (req(), "output_uri 'out.jsonl' exists; pass overwrite=true"),
        (req(output_uri="file/x.jsonl"), "output_uri 'file/x.jsonl': .* is not a directory"),
        (req(input_uri="outputs/out.jsonl", output_uri="out.jsonl"), "output_uri must differ"),
        (req(output_uri=f"file://{tmp_path}/o.jsonl"), "output_uri .* is outside .*outputs"),
        (req(output_uri="/etc/o.jsonl"), "output_uri .* outside the storage root"),
        (req(input_uri="nope://bucket/x"), "input_uri 'nope://bucket/x' cannot be opened"),
    ]
    for bad, message in cases:
        with pytest.raises(errors.InvalidInput, match=message):
            batch_io.check_request(bad, tmp_path)
    assert batch_io.check_request(req(overwrite=True), tmp_path).overwrite


def test_same_input_and_output_is_a_schema_error():
    with pytest.raises(ValueError, match="output_uri must differ"):
        req(output_uri="in.jsonl")


@pytest.mark.parametrize("chunk", [1, 3, 7, 1 << 20])
def test_count_rows_matches_read_text_splitting(tmp_path, monkeypatch, chunk):
    text = "a\r\n\r\nb\n   \nc\rd\u2028e\n\nlast-no-newline"
    path = tmp_path / "in.jsonl"
    path.write_bytes(text.encode())
    monkeypatch.setattr(batch_io, "CHUNK", chunk)
    expected = sum(1 for line in text.splitlines() if line.strip())  # read_text's rule
    assert batch_io.count_rows(str(path)) == expected == 6


def test_open_output_moves_into_place_or_leaves_nothing(tmp_path):
    target = tmp_path / "sub" / "out.jsonl"
    with batch_io.open_output(str(target)) as stream:
        stream.write(b"x\n")
        assert not target.exists()
    assert target.read_bytes() == b"x\n"
    with pytest.raises(RuntimeError), batch_io.open_output(str(tmp_path / "o2")) as stream:
        stream.write(b"half")
        raise RuntimeError("job failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]


# ------------------------------------------------------------------ the job's driver side


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_reporter_reports_every_interval_with_percent_and_steady_rate():
    sent, clock = [], Clock()
    reporter = Reporter(lambda p: sent.append(p) or True, total=400, every_s=1.0, clock=clock)
    clock.now += 5  # start-up: model loading
    reporter.add(100)
    assert [p["rows_done"] for p in sent] == [100]
    assert sent[0]["rows_per_s"] is None  # one block: no rate yet
    clock.now += 0.5
    reporter.add(50, errors=2)
    assert len(sent) == 1  # within the interval: nothing sent
    clock.now += 0.5
    reporter.add(50)
    assert sent[-1]["rows_done"] == 200 and sent[-1]["percent"] == 50.0
    assert sent[-1]["errors"] == 2 and sent[-1]["elapsed_s"] == 6.0
    assert sent[-1]["rows_per_s"] == 100.0  # rows after the first block / time since it


def test_reporter_steady_rate_is_fitted_between_10_and_90_percent():
    clock = Clock()
    reporter = Reporter(lambda p: True, total=1000, every_s=1.0, clock=clock)
    clock.now += 8
    reporter.add(50)  # the first output, after start-up: before the window
    assert reporter.steady_rate() is None
    clock.now += 1
    reporter.add(250)  # 300 rows: in the window from here
    for _ in range(6):
        clock.now += 1
        reporter.add(100)  # 900 rows after 6 s
    assert reporter.steady_rate() == 100.0
    clock.now += 10
    reporter.add(100)  # a slow tail, past 90%, does not move it
    assert reporter.progress().rows_per_s == 100.0
    small = Reporter(lambda p: True, total=10, clock=clock)
    small.add(10)  # one block: no rate
    assert small.steady_rate() is None


def test_reporter_steady_rate_sees_through_ordered_bursts():
    # Two model copies at 50 rows/s each: copy B's block waits for copy A's, then both
    # come out at once every 10 s.
    clock = Clock()
    reporter = Reporter(lambda p: True, total=10_000, every_s=1.0, clock=clock)
    for _ in range(10):
        clock.now += 10
        reporter.add(500)
        reporter.add(500)
    # Rows over time since the first output would say (10000 - 500) / 90 s = 105.6.
    assert reporter.steady_rate() == pytest.approx(100.0, rel=0.02)


def test_reporter_raises_canceled_when_the_task_has_ended():
    reporter = Reporter(lambda p: False, total=10, every_s=0.0, clock=Clock())
    with pytest.raises(Canceled):
        reporter.add(1)


def test_write_output_keeps_block_order_and_counts_errors():
    sent, clock = [], Clock()
    reporter = Reporter(lambda p: sent.append(p) or True, total=3, clock=clock)
    blocks = [
        pa.table({"line": [b'{"id":1}', b'{"id":2,"error":"x"}'], "ok": [True, False]}),
        pa.table({"line": pa.array([], pa.binary()), "ok": pa.array([], pa.bool_())}),
        pa.table({"line": [b'{"id":3}'], "ok": [True]}),
    ]

    class Sink:
        data = b""

        def write(self, b: bytes) -> None:
            self.data += b

    sink = Sink()
    write_output(blocks, sink, reporter)
    assert [orjson.loads(x)["id"] for x in sink.data.splitlines()] == [1, 2, 3]
    assert reporter.done == 3 and reporter.errors == 1
    assert reporter.progress().percent == 100.0


@pytest.mark.parametrize(
    ("rows", "copies", "blocks"),
    [(0, 1, 1), (3, 2, 2), (8000, 2, 2), (8193, 2, 4), (10_000, 2, 4), (40_000, 2, 10),
     (100_000, 2, 26), (1_000_000, 8, 248)],
)  # fmt: skip
def test_each_copy_gets_the_same_number_of_windows_of_at_most_about_4096_rows(rows, copies, blocks):
    assert windows(rows, copies) == blocks
    assert blocks % copies == 0
    assert rows / blocks <= 4096


def test_a_long_block_is_predicted_in_slices_in_order(monkeypatch):
    monkeypatch.setattr(batch, "MAX_WINDOW_ROWS", 4)
    model = FakeEmbedder()
    copy = object.__new__(BatchPredictor)
    copy.predictor, copy.kind, copy.per_call = model, "sentence-transformer", 2
    sizes = [5, 1, 9, 3, 7, 2, 8, 4, 6, 10]
    lines = [json.dumps({"id": i, "text": "x" * n}) for i, n in enumerate(sizes)]
    lines[3] = "not json"
    table = copy(pa.table({"text": lines}))
    got = [orjson.loads(x) for x in table.column("line").to_pylist()]
    assert [r["id"] for r in got] == [0, 1, 2, None, 4, 5, 6, 7, 8, 9]
    assert table.column("ok").to_pylist() == [i != 3 for i in range(10)]
    assert got[9] == {"id": 9, "embedding": [10.0]}
    # slices of 4 rows, each sorted by line length, 2 rows a call (the short bad line is
    # the first call's other row)
    assert model.texts == [[1], [5, 9], [2, 4], [7, 8], [6, 10]]


def test_actor_options_are_the_deployment_resources():
    assert actor_options({"num_gpus": 0.5, "num_cpus": 2}) == {"num_gpus": 0.5, "num_cpus": 2}


def test_refusal_only_when_the_whole_cluster_is_too_small():
    total = {"CPU": 4.0, "GPU": 1.0}
    assert refusal({"num_cpus": 1, "num_gpus": 0.5}, 2, total) is None
    why = refusal({"num_cpus": 1, "num_gpus": 1}, 2, total)
    assert "GPU=2" in why and "GPU=1" in why and "lower concurrency" in why
    assert refusal({"num_cpus": 0, "num_gpus": 1}, 1, {"CPU": 2.0}) is not None


class RecordingEncoder:
    """A SentenceTransformer stand-in: records the batch_size of each encode."""

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []

    def encode(self, texts, batch_size, convert_to_numpy):
        import numpy as np

        self.batch_sizes.append(batch_size)
        return np.array([[float(len(t))] for t in texts])


@pytest.mark.parametrize("per_call", [8, None])
def test_a_batch_copy_encodes_in_chunks_of_the_jobs_rows_per_call(monkeypatch, per_call):
    def load(spec, device):
        predictor = kinds.SentenceTransformerPredictor(spec, device)
        predictor.model = RecordingEncoder()
        return predictor

    monkeypatch.setattr(batch.kinds, "load", load)
    monkeypatch.setattr(batch, "pick_device", lambda: "cpu")
    copy = BatchPredictor({"kind": "sentence-transformer"}, per_call)
    lines = [json.dumps({"id": i, "text": "x" * (i + 1)}) for i in range(20)]
    table = copy(pa.table({"text": lines}))
    assert table.column("ok").to_pylist() == [True] * 20
    expected = per_call or kinds.DEFAULT_MAX_BATCH_SIZE
    calls = 3 if per_call else 1  # 20 rows, 8 a call; or the whole window in one call
    assert copy.predictor.model.batch_sizes == [expected] * calls
