"""Each daemon runs locked down exactly as components/containers.py declares it:
all capabilities dropped but its own list, no-new-privileges, a memory limit,
and a healthcheck that exercises the service and passes."""

from __future__ import annotations

import time

import pytest

from components import containers
from daemon_harness import Stack


@pytest.mark.parametrize("service", ["dovecot", "postfix", "roundcube"])
def test_each_daemon_runs_with_only_its_capabilities_and_its_healthcheck_passes(stack: Stack, service: str) -> None:
    container = getattr(stack, service)
    deadline = time.monotonic() + 90
    while True:
        container.reload()
        health = container.attrs["State"]["Health"]
        if health["Status"] == "healthy" or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert health["Status"] == "healthy", health["Log"][-3:]
    host = container.attrs["HostConfig"]
    assert host["CapDrop"] == ["ALL"]
    assert {c.removeprefix("CAP_") for c in host["CapAdd"]} == set(containers.CAPABILITIES[service])
    assert host["SecurityOpt"] == ["no-new-privileges:true"]
    assert host["Memory"] == getattr(stack.variant.settings.memory_mb, service) * 1024 * 1024
    assert not host["Privileged"]
    # The kernel agrees: PID 1's bounding set holds exactly the listed capabilities.
    status = container.exec_run(["grep", "CapBnd", "/proc/1/status"]).output.decode()
    expected = sum(1 << CAP_NUMBERS[c] for c in containers.CAPABILITIES[service])
    assert int(status.split()[1], 16) == expected, status


# linux/capability.h
CAP_NUMBERS = {"CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6, "SETUID": 7,
               "NET_BIND_SERVICE": 10, "SYS_CHROOT": 18}
