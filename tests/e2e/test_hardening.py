"""Every deployed container is locked down and healthy, as docker inspect shows it."""

from __future__ import annotations

import time

import pytest

from components import service as containers
from components.settings import ProcessLimits
from tests.e2e.deploy import read_back
from tests.e2e.environment import PORTS, Stack

pytestmark = pytest.mark.e2e

SERVICES = ("dovecot", "postfix", "roundcube")
INSIDE = {"http": 80, "smtp": 25, "submission": 587, "imaps": 993, "imap": 143}
SERVICE_OF = {"http": "roundcube", "smtp": "postfix", "submission": "postfix", "imaps": "dovecot", "imap": "dovecot"}


def wait_healthy(stack: Stack, service: str, seconds: float = 120) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        state = stack.deployment.container(service).attrs["State"]
        if state.get("Health", {}).get("Status") == "healthy" or time.monotonic() > deadline:
            return state
        time.sleep(2)


@pytest.mark.parametrize("service", SERVICES)
def test_container_is_locked_down_bounded_and_healthy(stack: Stack, service: str) -> None:
    state = wait_healthy(stack, service)
    assert state["Health"]["Status"] == "healthy", state["Health"]["Log"][-3:]
    attrs = stack.deployment.container(service).attrs
    host = attrs["HostConfig"]
    assert host["CapDrop"] == ["ALL"]
    assert {c.removeprefix("CAP_") for c in host["CapAdd"]} == set(containers.CAPABILITIES[service])
    assert host["SecurityOpt"] == ["no-new-privileges:true"]
    assert host["Privileged"] is False
    assert host["ReadonlyRootfs"] is True and host["Tmpfs"] == containers.SCRATCH[service]
    assert len(host["VolumesFrom"]) == 1 and host["VolumesFrom"][0].endswith(":ro")
    # The data folder is the stack's named volume, not the carrier's copy of
    # the image's VOLUME at the same path.
    data = {"dovecot": "/var/mail", "postfix": "/var/spool/postfix", "roundcube": "/var/lib/roundcube/db"}[service]
    mounted = {m["Destination"]: m for m in attrs["Mounts"]}[data]
    assert mounted["Type"] == "volume" and mounted["Name"] in {v.name for v in stack.deployment.volumes}, mounted
    write = stack.deployment.container(service).exec_run(["sh", "-c", "echo x > /etc/probe"], user="root")
    assert write.exit_code != 0 and b"Read-only file system" in write.output, write.output
    assert host["Memory"] > 0 and host["MemorySwap"] == host["Memory"]
    declared_limit = stack.capture.one("pulumi-python:dynamic/roundcube-authentik:PidsLimit", f"-{service}-pids-limit")
    assert host["PidsLimit"] == declared_limit.inputs["pids_limit"] == getattr(ProcessLimits(), service)
    assert host["LogConfig"] == {"Type": "json-file", "Config": containers.LOG_OPTS}
    assert host["RestartPolicy"]["Name"] == "unless-stopped"
    assert attrs["Config"]["Healthcheck"]["Test"][0] == "CMD"
    # Published: exactly the ports the settings list for this service, on loopback.
    expected = {f"{INSIDE[name]}/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]
                for name, port in PORTS.items() if port and SERVICE_OF[name] == service}
    assert host["PortBindings"] == expected


def test_a_second_pulumi_up_would_change_nothing(stack: Stack) -> None:
    """Every container, network and volume, read back as the docker provider reads
    it (tests/e2e/readback.py), equals its declaration: no update, no replacement.
    (The deployment checks this right after creating them, as the provider's
    Create ends with Read; this reads everything again once the stack has served.)"""
    everything = set(stack.deployment.containers)
    assert read_back(stack.deployment, stack.capture, everything) == []
    assert len(everything) == len(stack.capture.of_type("docker:index/container:Container"))
