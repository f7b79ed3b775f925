"""One training step of contrastive fine-tuning of a SentenceTransformer, and the step plan.

The loss is MultipleNegativesRanking-style: each anchor's positive is the right answer among
all positives of the worker's batch (in-batch negatives), cross-entropy over the scaled
cosine-similarity matrix. Anchors and positives go through one forward pass, so DDP sees one
forward per backward.

Steps are deterministic: epoch ``e`` shuffles the train split with ``seed`` and ``e`` and
deals it to the workers, so a run restored at step ``s`` (from ``ray.train.get_checkpoint()``
after a worker failure, or ``params.resume_from``) continues with exactly the batch step
``s + 1`` would have used. Nothing here needs Ray: the bench's plain PyTorch loop uses the
same pieces.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class StepPlan:
    """How many steps an epoch has and when the run ends; the same on every worker."""

    pairs_per_worker: int
    batch_size: int
    steps_per_epoch: int
    total_steps: int

    @classmethod
    def build(
        cls, n_train: int, world_size: int, batch_size: int, epochs: int, max_steps: int | None
    ) -> StepPlan:
        per_worker = n_train // world_size
        if per_worker < 2:
            raise ValueError(
                f"{n_train} train pairs over {world_size} workers leave fewer than 2 per worker "
                "(in-batch negatives need 2); add pairs or lower num_workers"
            )
        batch = min(batch_size, per_worker)
        full, rest = divmod(per_worker, batch)
        steps_per_epoch = full + (1 if rest >= 2 else 0)  # a batch of 1 has no negatives
        total = max_steps if max_steps is not None else epochs * steps_per_epoch
        return cls(per_worker, batch, steps_per_epoch, total)


def epoch_batches(
    pairs: Sequence[Sequence[str]], plan: StepPlan, epoch: int, rank: int, world: int, seed: int
) -> list[list[Sequence[str]]]:
    """This worker's batches for ``epoch``, in order."""
    order = list(range(len(pairs)))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    mine = order[rank::world][: plan.pairs_per_worker]
    batches = [mine[i : i + plan.batch_size] for i in range(0, len(mine), plan.batch_size)]
    return [[pairs[i] for i in b] for b in batches[: plan.steps_per_epoch]]


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def contrastive_loss(
    model: nn.Module, batch: Sequence[Sequence[str]], scale: float, device: torch.device
) -> torch.Tensor:
    """In-batch-negatives cross-entropy; ``model`` is a SentenceTransformer, maybe in DDP."""
    n = len(batch)
    texts = [p[0] for p in batch] + [p[1] for p in batch]
    features = unwrap(model).preprocess(texts)
    features = {k: v.to(device) if torch.is_tensor(v) else v for k, v in features.items()}
    emb = F.normalize(model(features)["sentence_embedding"], dim=-1)
    logits = scale * emb[:n] @ emb[n:].T
    return F.cross_entropy(logits, torch.arange(n, device=logits.device))


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Sequence[Sequence[str]],
    scale: float,
    device: torch.device,
) -> float:
    loss = contrastive_loss(model, batch, scale, device)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def epochs_done(step: int, plan: StepPlan) -> float:
    """Passes over the train split after ``step`` steps."""
    return round(step / plan.steps_per_epoch, 4) if plan.steps_per_epoch else math.nan
