"""The fine-tuning shapes the API and the trainer share (``cluster.schemas.training``)."""

from __future__ import annotations

import pytest

from cluster.schemas import FineTuneCreate, training
from train_jobs import config

PAIRS = [{"anchor": "a", "positive": "b"}, {"anchor": "c", "positive": "d"}]


def test_the_trainer_runs_the_apis_shapes():
    assert config.FinetuneParams is training.FinetuneParams
    assert issubclass(config.DatasetSpec, training.DatasetSpec)
    assert config.FinetuneConfig.model_fields["dataset"].annotation is config.DatasetSpec


def test_a_requests_dataset_becomes_one_the_trainer_can_load(tmp_path):
    req = FineTuneCreate(embedding_model_id="m", dataset={"pairs": PAIRS})
    run = config.FinetuneConfig(
        base_model_path="m", dataset=req.dataset, output_dir="o", storage_path=str(tmp_path)
    )
    assert isinstance(run.dataset, config.DatasetSpec)
    assert [tuple(p) for p in run.dataset.load()] == [("a", "b"), ("c", "d")]


def test_bad_pairs_are_refused_by_the_request_schema():
    with pytest.raises(ValueError, match=r"pairs\[1\]: 'positive' is empty"):
        training.DatasetSpec(pairs=[PAIRS[0], {"anchor": "x", "positive": " "}])
    with pytest.raises(ValueError, match="exactly one of"):
        training.DatasetSpec()
