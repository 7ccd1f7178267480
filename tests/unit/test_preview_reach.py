"""What `pulumi preview` of this program reaches: the state, authentik, never the Docker host.

CI previews pull requests without the Docker host's SSH key (docs/ci.md,
"What a preview reaches"). On the providers' side that rests on their source:
pulumi-docker's Configure skips its daemon ping for ssh:// hosts and the
bridged provider builds its client only when a resource operation runs; the
bridge calls Apply only outside a preview; a refresh (which reads containers
back) is off. These tests hold the program's side of it: nothing it declares
makes a preview build, look up or update anything on the Docker host.
"""

from __future__ import annotations

import subprocess
import sys

import grpc
import pytest
from pulumi.runtime.proto import provider_pb2, provider_pb2_grpc

from components.pids_limit import _provider
from offline.capture import Capture, capture_stack

STACKS = ("dev", "prod")
IMAGE = "docker:index/image:Image"


@pytest.fixture(scope="module", params=STACKS)
def declared(request: pytest.FixtureRequest) -> Capture:
    return capture_stack(request.param)


def test_a_preview_builds_no_image(declared: Capture) -> None:
    # pulumi-docker's Image builds during a preview only with buildOnPreview
    # (provider.go canPreview); a build runs on the Docker host.
    images = declared.of_type(IMAGE)
    assert len(images) == 4
    for image in images:
        assert image.inputs["buildOnPreview"] is False, image.name


def test_the_program_looks_up_authentik_and_nothing_on_the_docker_host(declared: Capture) -> None:
    # Look-ups (invokes) run during a preview too. A Docker data source would
    # connect to the engine; authentik's are what the preview needs its token for.
    tokens = {invoke.token for invoke in declared.invokes}
    assert tokens, "the program looks up authentik's flows, key pair and scope mappings"
    assert all(token.startswith("authentik:") for token in tokens), tokens


@pytest.fixture
def no_docker_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """`import docker` fails: any call into the Docker API client raises ImportError."""
    monkeypatch.setitem(sys.modules, "docker", None)


def test_the_process_limit_provider_previews_without_docker(no_docker_client: None) -> None:
    provider = _provider()
    # A socket that does not exist: were the block to fail, nothing is reached.
    olds = {"docker_host": "unix:///nonexistent/docker.sock", "container_id": "c0ffee", "pids_limit": 500}
    news = {**olds, "pids_limit": 64}
    # Check and diff are all a preview calls (no read without a refresh).
    assert provider.check(olds, news).inputs == news
    diff = provider.diff("c0ffee", olds, news)
    assert diff.changes is True and diff.replaces == []
    assert provider.diff("c0ffee", olds, {**news, "container_id": "d00d"}).replaces == ["container_id"]
    # The same provider, asked to act, needs the client: the block above is real.
    with pytest.raises(ImportError):
        provider.create(news)
    with pytest.raises(ImportError):
        provider.update("c0ffee", olds, news)


def test_pulumis_dynamic_provider_host_is_not_asked_to_act_in_a_preview() -> None:
    """The engine calls Create/Update during a preview only for providers whose
    Configure answers supportsPreview (pkg/resource/plugin/provider_plugin.go);
    the Python dynamic provider host answers no, so PidsLimit's create and update
    (the Docker API calls) never run in a preview."""
    host = subprocess.Popen([sys.executable, "-m", "pulumi.dynamic"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        port = int(host.stdout.readline()) if host.stdout else 0
        assert port > 0, "the dynamic provider host printed no port"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            answer = provider_pb2_grpc.ResourceProviderStub(channel).Configure(
                provider_pb2.ConfigureRequest(), timeout=30
            )
        assert answer.supportsPreview is False
    finally:
        host.kill()
        host.wait(timeout=30)
