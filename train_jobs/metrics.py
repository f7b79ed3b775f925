"""Retrieval quality on held-out pairs: recall@1 and MRR of finding each anchor's positive
among all held-out positives."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from train_jobs.data import Pair


def retrieval_metrics(anchors: torch.Tensor, positives: torch.Tensor) -> dict[str, float]:
    """Row i of ``anchors`` should retrieve row i of ``positives``; ties count against it."""
    sims = F.normalize(anchors.float(), dim=-1) @ F.normalize(positives.float(), dim=-1).T
    correct = sims.diagonal().unsqueeze(1)
    ranks = (sims >= correct).sum(dim=1).float()  # the positive itself is one of them
    return {
        "recall@1": (ranks == 1).float().mean().item(),
        "mrr": (1.0 / ranks).mean().item(),
    }


def evaluate(
    model: SentenceTransformer, pairs: Sequence[Pair], batch_size: int = 64
) -> dict[str, float]:
    """recall@1 and MRR of ``model`` on ``pairs``; ``{}`` when there are none."""
    if not pairs:
        return {}
    was_training = model.training
    model.eval()
    try:
        kwargs = {"batch_size": batch_size, "convert_to_tensor": True, "show_progress_bar": False}
        anchors = model.encode([p[0] for p in pairs], **kwargs)
        positives = model.encode([p[1] for p in pairs], **kwargs)
    finally:
        model.train(was_training)
    return retrieval_metrics(anchors, positives)
