"""Fixtures of the daemon tests: images, throwaway PKI, settings stacks, and a
running stack of the four services. Helpers live in daemon_harness.py."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import docker
import pytest

from daemon_harness import Pki, Resources, Stack, Variant, build_images, make_pki, make_variant, running_stack


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    client = docker.from_env(timeout=600)
    client.ping()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def images(docker_client: docker.DockerClient) -> dict[str, str]:
    return build_images(docker_client)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(Path(tmp_path_factory.mktemp("pki")))


@pytest.fixture(scope="session", params=["dev", "prod"])
def variant(request: pytest.FixtureRequest, pki: Pki) -> Variant:
    # dev accepts every address of the domain (directory: open); prod takes
    # its mailboxes from (fake) authentik through the real directory sync.
    if request.param == "prod":
        return make_variant("prod", pki, directory={"postmaster": "alice@example.com", "interval": 10},
                            clients={"app_passwords": True})
    return make_variant("dev", pki)


@pytest.fixture()
def resources(docker_client: docker.DockerClient, request: pytest.FixtureRequest) -> Iterator[Resources]:
    """Docker objects of one test, removed when it ends, passed or failed."""
    label = request.node.name.split("[")[0].removeprefix("test_")[:30].replace("_", "-")
    made = Resources(docker_client, label)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture(scope="session")
def stack(docker_client: docker.DockerClient, images: dict[str, str], variant: Variant, pki: Pki) -> Iterator[Stack]:
    """One running stack per settings variant, shared by that variant's tests."""
    with running_stack(docker_client, images, variant, pki) as running:
        yield running
