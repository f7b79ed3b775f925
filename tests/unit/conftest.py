"""Fixtures the client and CLI unit tests share."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from cluster.cli import common
from cluster.client import Client
from tests.unit.client_support import Server, deployment_body


@pytest.fixture
def no_sleep(monkeypatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    return slept


@pytest.fixture
def serve(monkeypatch):
    """``serve(routes)``: the commands' client answers from ``routes``; returns the Server."""

    def install(routes: dict[tuple[str, str], Any]) -> Server:
        routes.setdefault(("GET", "/v1/deployments/d"), deployment_body())
        server = Server(routes)
        monkeypatch.setattr(
            common,
            "make_client",
            lambda url, key: Client(
                url="http://cli.test", api_key=key or "k", transport=httpx.MockTransport(server)
            ),
        )
        return server

    return install
