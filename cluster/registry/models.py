"""The registry's models and versions: register, add a version (idempotent on retry), read.

A model and its version 1 are written together; a version is
numbered past every version there was, those set aside at start included, so a number
never names two versions.
"""

from __future__ import annotations

from datetime import timedelta

from cluster import errors
from cluster.registry.state import RegistryState
from cluster.schemas import ModelCreate, ModelPublic, ModelVersion, VersionCreate, utcnow

# A version identical to the latest one, added this soon after it, is a retry of that call.
RETRY_WINDOW = timedelta(minutes=10)


class ModelStore:
    def __init__(self, state: RegistryState) -> None:
        self._state = state
        # The state's own dicts, read here; only ``RegistryState.save`` changes them.
        self._models = state.models
        self._versions = state.versions

    def register(self, req: ModelCreate) -> ModelVersion:
        """The model and its version 1, written together; registering it again (a retry
        included) is a Conflict and adds nothing."""
        if req.model_id in self._models:
            raise errors.Conflict(
                f"model '{req.model_id}' exists; add a version with "
                f"POST /v1/models/{req.model_id}/versions"
            )
        version = self._new_version(req, req, "registered")
        self._state.save(req, version)
        return version

    def add_version(
        self, model_id: str, req: VersionCreate, source: str = "registered"
    ) -> ModelVersion:
        model = self.model(model_id)
        if model.kind != "custom" and not req.artifact_uri:
            raise errors.BadRequest(f"kind '{model.kind}' needs 'artifact_uri': where weights are")
        previous = self._same_version(model_id, req, source)
        if previous is not None:
            return previous
        version = self._new_version(model, req, source)
        self._state.save(version)
        return version

    def _same_version(self, model_id: str, req: VersionCreate, source: str) -> ModelVersion | None:
        """The version an earlier run of this call added, if any: a fine-tuning run adds one
        version per output (its task id and artifact), and an identical ``registered``
        version right after itself is the same call retried."""
        versions = self._versions.get(model_id, [])
        if source != "registered":
            for v in versions:
                if v.source == source and v.artifact_uri == req.artifact_uri:
                    return v
            return None
        last = versions[-1] if versions else None
        same = (source, req.artifact_uri, req.metrics)
        if last is not None and (last.source, last.artifact_uri, last.metrics) == same:
            return last if utcnow() - last.created_at < RETRY_WINDOW else None
        return None

    def _new_version(self, model: ModelCreate, req: VersionCreate, source: str) -> ModelVersion:
        versions = self._versions.get(model.model_id, [])
        # Past any number set aside too: "v3" never names two different versions.
        floor = self._state.versions_set_aside.get(model.model_id, 0)
        return ModelVersion(
            model_id=model.model_id,
            version=max([floor, *(v.version for v in versions)]) + 1,
            kind=model.kind,
            artifact_uri=req.artifact_uri,
            predictor=model.predictor,
            predictor_kwargs=model.predictor_kwargs,
            metrics=req.metrics,
            source=source,
        )

    def model(self, model_id: str) -> ModelCreate:
        try:
            return self._models[model_id]
        except KeyError:
            raise errors.NotFound(f"model '{model_id}' is not registered") from None

    def kind(self, model_id: str) -> str | None:
        """The model's kind; None for a model that is not registered (any more)."""
        model = self._models.get(model_id)
        return model.kind if model is not None else None

    def public(self, model_id: str) -> ModelPublic:
        model = self.model(model_id)
        versions = self._versions.get(model_id, [])
        return ModelPublic(
            model_id=model_id,
            kind=model.kind,
            predictor=model.predictor,
            latest_version=versions[-1].version,
            versions=[v.version for v in versions],
            created_at=versions[0].created_at,
        )

    def all(self) -> list[ModelPublic]:
        return [self.public(m) for m in self._models]

    def versions(self, model_id: str) -> list[ModelVersion]:
        self.model(model_id)
        return list(self._versions.get(model_id, []))

    def version(self, model_id: str, version: int | None = None) -> ModelVersion:
        versions = self.versions(model_id)
        if version is None:
            return versions[-1]
        for v in versions:
            if v.version == version:
                return v
        numbers = [v.version for v in versions]
        known = f"1..{len(numbers)}" if numbers == list(range(1, len(numbers) + 1)) else numbers
        raise errors.NotFound(f"model '{model_id}' has no version {version}; versions are {known}")
