"""The Serve apps modelyard made. Only these are ever deleted (by the operator, by
`modelyard down`), so a shared cluster's other Serve apps are left alone whatever their
names. An app is recorded before Serve hears of it (``record``)."""

from __future__ import annotations

from cluster.registry.deployments import DeploymentStore
from cluster.registry.store import Store
from cluster.schemas.deployments import ServeApp

TABLE = "serve_apps"


class ServeApps:
    def __init__(self, store: Store, deployments: DeploymentStore) -> None:
        self._store = store
        self._deployments = deployments
        self._apps: dict[str, ServeApp] | None = None  # read on first use

    def _loaded(self) -> dict[str, ServeApp]:
        if self._apps is None:
            self._apps = dict(self._store.load(TABLE, ServeApp))
            if not self._apps:
                # A database from before apps were recorded: its deployments' apps are its own.
                for d in self._deployments.all():
                    for app in d.live_apps:
                        self.record(app, d.name)
        return self._apps

    def owned(self) -> list[str]:
        return list(self._loaded())

    def record(self, name: str, deployment: str) -> None:
        apps = self._loaded()
        if name not in apps:
            app = ServeApp(name=name, deployment=deployment)
            self._store.put(TABLE, name, app)
            apps[name] = app

    def forget(self, names: list[str]) -> None:
        apps = self._loaded()
        for name in names:
            if name in apps:
                self._store.delete(TABLE, name)
                del apps[name]
