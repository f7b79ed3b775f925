"""Predictors the tests deploy as ``custom`` models (replicas import them via PYTHONPATH)."""

from __future__ import annotations

import time


class Echo:
    """Answers its args back, after ``delay_s``; ``fail=True`` raises instead."""

    def __init__(self, artifact_path: str, device: str, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.device = device

    def predict(self, **args):
        if args.get("fail"):
            raise RuntimeError("asked to fail")
        time.sleep(self.delay_s)
        return {"echo": args, "device": self.device}


class BrokenLoader:
    def __init__(self, artifact_path: str, device: str) -> None:
        raise RuntimeError("weights are corrupt")


class Versioned:
    """Behaviour read from its version's artifact, a JSON file: {"delay_s", "fail"}."""

    def __init__(self, artifact_path: str, device: str) -> None:
        import json
        from pathlib import Path

        self.conf = json.loads(Path(artifact_path).read_text())

    def predict(self, **args):
        time.sleep(self.conf.get("delay_s", 0.0))
        if self.conf.get("fail"):
            raise RuntimeError("this version is broken")
        return {"echo": args}
