"""The e2e deployment stops and removes everything it started, on success and on failure."""

from __future__ import annotations

import docker
import pytest
import requests

from offline.capture import capture
from tests.e2e.deploy import UnsupportedDeclaration, build_images, deploy, leftovers
from offline.stack_file import StackConfig
from tests.e2e.environment import TESTNET_IMAGE, Override, e2e_config, layout, start_test_services, wait_for
from tests.testnet import zone

pytestmark = pytest.mark.e2e

WHERE = layout("teardown", 1)
STACK = WHERE.stack
PREFIX = WHERE.prefix
HTTP_PORT = WHERE.ports["http"]


def small_stack(pki: dict) -> StackConfig:
    # Its own names (from the stack) and one published port, apart from the session's stack.
    return e2e_config(WHERE, pki, extra={
        "ports": Override({"http": HTTP_PORT, "smtp": None, "submission": None, "imaps": None, "imap": None}, "HTTP only"),
        "tls": Override(None, "no IMAPS here"),
        "clients": Override({"app_passwords": False}, "app passwords need tls"),
    })


def test_removing_a_running_deployment_leaves_no_container_network_or_volume(engine: docker.DockerClient, pki: dict) -> None:
    declared = capture(STACK, small_stack(pki), placeholders=False)
    zone.build_image(engine, TESTNET_IMAGE)
    deployment = deploy(engine, declared, build_images(engine, declared), start_test_services(engine, declared, PREFIX))
    try:
        wait_for(lambda: requests.get(f"http://127.0.0.1:{HTTP_PORT}/", timeout=3).status_code == 200, "Roundcube")
        running = sorted(leftovers(engine, PREFIX))
        # dovecot, postfix, opendkim, roundcube, the directory sync, their five
        # config carriers, and the test's DNS zone and receiving SMTP server
        assert len([r for r in running if r.startswith("container")]) == 12
        # mail, queue, Roundcube's database, the directory, and Dovecot's auth socket for Postfix
        assert len([r for r in running if r.startswith("volume")]) == 5
        carriers = [c for name, c in deployment.containers.items() if name.endswith("-config")]
        anonymous = [m["Name"] for c in carriers for m in c.attrs["Mounts"] if m["Type"] == "volume"]
        assert len(carriers) == 5 and len(anonymous) >= 5
    finally:
        # What the session fixture does in its `finally`, whether its tests passed or not.
        deployment.remove()
    assert list(leftovers(engine, PREFIX)) == []
    remaining = {v.name for v in engine.volumes.list()}
    assert not remaining & set(anonymous), "the carriers' config volumes are removed with them"


def test_a_deployment_that_fails_midway_removes_what_it_created(engine: docker.DockerClient, pki: dict) -> None:
    declared = capture(STACK, small_stack(pki), placeholders=False)
    # The last container asks for an input the deployer refuses to ignore.
    last = sorted(declared.of_type("docker:index/container:Container"), key=lambda r: r.name)[-1]
    last.inputs["envs"] = ["SURPRISE=1"]  # an input this deployer does not know
    zone.build_image(engine, TESTNET_IMAGE)
    with pytest.raises(UnsupportedDeclaration, match="envs"):
        deploy(engine, declared, build_images(engine, declared), start_test_services(engine, declared, PREFIX))
    assert list(leftovers(engine, PREFIX)) == []
