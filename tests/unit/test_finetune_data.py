"""Fine-tuning data and config: errors say where and what, splits are deterministic."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError

from train_jobs.config import FinetuneConfig, FinetuneParams
from train_jobs.data import (
    MAX_EVAL_PAIRS,
    MAX_INLINE_PAIRS,
    Pair,
    load_pairs,
    parse_inline,
    split_pairs,
)
from train_jobs.metrics import retrieval_metrics
from train_jobs.steps import StepPlan, epoch_batches


def pairs(n: int) -> list[dict[str, str]]:
    return [{"anchor": f"question {i}", "positive": f"answer {i}"} for i in range(n)]


def write_jsonl(tmp_path, lines: list[str]):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_jsonl_loads_from_path_and_file_uri(tmp_path):
    path = write_jsonl(tmp_path, [json.dumps(p) for p in pairs(3)] + [""])
    assert load_pairs(uri=str(path)) == [Pair(f"question {i}", f"answer {i}") for i in range(3)]
    assert load_pairs(uri=path.as_uri()) == load_pairs(uri=str(path))


@pytest.mark.parametrize(
    ("bad_line", "expected"),
    [
        ('{"anchor": "a", "positive": ', "line 3: not valid JSON"),
        ('{"anchor": "a"}', "line 3: missing 'positive'"),
        ('{"positive": "p"}', "line 3: missing 'anchor'"),
        ('{"anchor": "a", "positive": 7}', "line 3: 'positive' must be a string, got int"),
        ('{"anchor": "  ", "positive": "p"}', "line 3: 'anchor' is empty"),
        ('{"anchor": "a", "positive": "p", "label": 1}', "line 3: unknown field(s) 'label'"),
        ('["a", "p"]', "line 3: expected an object"),
    ],
)
def test_bad_jsonl_line_is_named(tmp_path, bad_line, expected):
    good = [json.dumps(p) for p in pairs(2)]
    path = write_jsonl(tmp_path, [*good, bad_line, *good])
    with pytest.raises(ValueError) as exc:
        load_pairs(uri=str(path))
    assert expected in str(exc.value)


def test_blank_lines_keep_line_numbers(tmp_path):
    path = write_jsonl(tmp_path, [json.dumps(pairs(1)[0]), "", "not json"])
    with pytest.raises(ValueError, match="^line 3: "):
        load_pairs(uri=str(path))


def test_missing_and_empty_files_say_so(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_pairs(uri=str(tmp_path / "nope.jsonl"))
    with pytest.raises(ValueError, match="no pairs"):
        load_pairs(uri=str(write_jsonl(tmp_path, [""])))


def test_inline_pairs_are_bounded_and_indexed():
    assert len(parse_inline(pairs(MAX_INLINE_PAIRS))) == MAX_INLINE_PAIRS
    with pytest.raises(ValueError, match=f"more than {MAX_INLINE_PAIRS}.*uri"):
        parse_inline(pairs(MAX_INLINE_PAIRS + 1))
    with pytest.raises(ValueError, match=r"pairs\[1\]: missing 'anchor'"):
        parse_inline([pairs(1)[0], {"positive": "p"}])


def test_exactly_one_source():
    with pytest.raises(ValueError, match="exactly one"):
        load_pairs()
    with pytest.raises(ValueError, match="exactly one"):
        load_pairs(uri="x.jsonl", pairs=pairs(2))


def test_split_is_deterministic_by_seed():
    data = [Pair(p["anchor"], p["positive"]) for p in pairs(100)]
    first = split_pairs(data, 0.2, seed=7)
    assert first == split_pairs(data, 0.2, seed=7)
    assert first != split_pairs(data, 0.2, seed=8)
    train, held_out = first
    assert len(held_out) == 20 and len(train) == 80
    assert sorted(train + held_out) == sorted(data)
    assert split_pairs(data, 0, seed=7) == (data, [])


def test_split_keeps_enough_on_both_sides():
    data = [Pair(p["anchor"], p["positive"]) for p in pairs(4)]
    assert len(split_pairs(data, 0.01, seed=0)[1]) == 2  # at least 2 to retrieve among
    with pytest.raises(ValueError, match="fewer than 2 for training"):
        split_pairs(data[:3], 0.5, seed=0)
    many = [Pair(f"a{i}", f"p{i}") for i in range(4 * MAX_EVAL_PAIRS)]
    assert len(split_pairs(many, 0.5, seed=0)[1]) == MAX_EVAL_PAIRS  # N x N stays bounded


def test_config_validates_at_the_edge():
    base = {"base_model_path": "m", "output_dir": "o", "storage_path": "s"}
    with pytest.raises(ValidationError, match=r"pairs\[0\]: 'positive' is empty"):
        FinetuneConfig(**base, dataset={"pairs": [{"anchor": "a", "positive": ""}]})
    with pytest.raises(ValidationError, match="exactly one"):
        FinetuneConfig(**base, dataset={})
    with pytest.raises(ValidationError, match="set use_gpu: true"):
        FinetuneParams(resources_per_worker={"GPU": 1})
    config = FinetuneConfig(**base, dataset={"uri": "x.jsonl"}, task_id="ft-1")
    assert config.run_name == "finetune-ft-1"


def test_step_plan_and_batches_are_the_same_on_every_call():
    plan = StepPlan.build(n_train=50, world_size=2, batch_size=8, epochs=3, max_steps=None)
    assert (plan.pairs_per_worker, plan.steps_per_epoch, plan.total_steps) == (25, 3, 9)
    data = [(f"a{i}", f"p{i}") for i in range(50)]
    rank0 = epoch_batches(data, plan, epoch=1, rank=0, world=2, seed=3)
    assert rank0 == epoch_batches(data, plan, epoch=1, rank=0, world=2, seed=3)
    rank1 = epoch_batches(data, plan, epoch=1, rank=1, world=2, seed=3)
    assert not {p for b in rank0 for p in b} & {p for b in rank1 for p in b}
    assert StepPlan.build(50, 2, 8, 3, max_steps=5).total_steps == 5
    with pytest.raises(ValueError, match="lower num_workers"):
        StepPlan.build(n_train=3, world_size=2, batch_size=8, epochs=1, max_steps=None)


def test_retrieval_metrics():
    eye = torch.eye(3)
    assert retrieval_metrics(eye, eye) == {"recall@1": 1.0, "mrr": 1.0}
    # Positives 0 and 1 lean towards the other anchor: those two rank second.
    swapped = retrieval_metrics(eye, 0.9 * eye[[1, 0, 2]] + 0.3 * eye)
    assert swapped["recall@1"] == pytest.approx(1 / 3)
    assert swapped["mrr"] == pytest.approx((0.5 + 0.5 + 1) / 3)
