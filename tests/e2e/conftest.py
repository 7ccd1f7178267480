"""Fixtures for the end-to-end tests: one deployed stack per session (see environment.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import docker
import pytest

from tests.e2e.environment import Stack, make_pki, names_on_loopback, running_stack


@pytest.fixture(scope="session", autouse=True)
def loopback_names() -> Iterator[None]:
    with names_on_loopback():
        yield


@pytest.fixture(scope="session")
def engine() -> docker.DockerClient:
    client = docker.from_env(timeout=600)
    client.ping()  # fails the e2e tests loudly when there is no engine
    return client


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def stack(engine: docker.DockerClient, pki: dict[str, Path]) -> Iterator[Stack]:
    with running_stack(engine, pki) as running:
        yield running
