"""Fixtures for the end-to-end tests: one deployed stack per session (see environment.py)."""

from __future__ import annotations

import contextlib
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


# The swarm module runs last, after every container-mode stack is gone: an engine
# leaving a swarm (`docker swarm leave --force`, the swarm test's cleanup) breaks
# name resolution in running containers on bridge networks (moby/moby#45144,
# reproduced on this engine, 20.10.24): Postfix no longer finds opendkim or Dovecot.
SWARM_MODULE = "test_swarm_e2e.py"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.path.name == SWARM_MODULE)  # stable: only moves the swarm tests


@pytest.fixture(scope="session")
def container_stacks() -> Iterator[contextlib.ExitStack]:
    """The container-mode stack(s) of this session, so a swarm test can remove them first."""
    with contextlib.ExitStack() as held:
        yield held


@pytest.fixture(scope="session")
def stack(engine: docker.DockerClient, pki: dict[str, Path], container_stacks: contextlib.ExitStack) -> Stack:
    return container_stacks.enter_context(running_stack(engine, pki))
