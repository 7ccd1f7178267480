"""The model of the docker provider's read-back (tests/e2e/readback.py), and the
program's containers declared in the form the provider reads back.

The e2e deployment compares every deployed container, network and volume with
its declaration through this model (tests/e2e/deploy.py read_back); these
tests pin the model to what terraform-provider-docker's Read does.
"""

from __future__ import annotations

import copy

import pytest

from offline.capture import capture_stack
from tests.e2e.readback import container_differences, go_duration, network_differences, parse_go_duration

CONTAINER = "docker:index/container:Container"


@pytest.mark.parametrize("nanoseconds, text", [
    (0, "0s"), (500 * 10**6, "500ms"), (30 * 10**9, "30s"), (60 * 10**9, "1m0s"), (90 * 10**9, "1m30s"),
    (3600 * 10**9, "1h0m0s"), (1_500_000_000, "1.5s"), (5400 * 10**9, "1h30m0s"),
])
def test_durations_print_as_go_prints_them(nanoseconds: int, text: str) -> None:
    assert go_duration(nanoseconds) == text
    assert parse_go_duration(text) == nanoseconds


# docker inspect of a container the provider created from DECLARED (Docker 20.10, trimmed).
DECLARED = {
    "name": "web", "image": "sha256:abc", "hostname": "web", "restart": "unless-stopped",
    "capabilities": {"adds": ["CAP_CHOWN"], "drops": ["ALL"]}, "securityOpts": ["no-new-privileges:true"],
    "readOnly": True, "tmpfs": {"/run": "size=16m"}, "memory": 64, "memorySwap": 64,
    "logDriver": "json-file", "logOpts": {"max-size": "10m"},
    "healthcheck": {"tests": ["CMD", "true"], "interval": "30s", "timeout": "10s", "retries": 3, "startPeriod": "1m0s"},
    "ports": [{"internal": 80, "external": 8080, "ip": "127.0.0.1"}],
    "networksAdvanced": [{"name": "net", "aliases": ["web"]}],
    "volumes": [{"volumeName": "data", "containerPath": "/data"}],
}
INSPECT = {
    "Name": "/web", "Image": "sha256:abc", "State": {"Running": True},
    "Config": {"Hostname": "web", "Cmd": ["run"], "Entrypoint": None,
               "Healthcheck": {"Test": ["CMD", "true"], "Interval": 30 * 10**9, "Timeout": 10 * 10**9,
                               "StartPeriod": 60 * 10**9, "Retries": 3}},
    "HostConfig": {"CapAdd": ["CAP_CHOWN"], "CapDrop": ["ALL"], "SecurityOpt": ["no-new-privileges:true"],
                   "ReadonlyRootfs": True, "Tmpfs": {"/run": "size=16m"}, "Memory": 64 << 20, "MemorySwap": 64 << 20,
                   "LogConfig": {"Type": "json-file", "Config": {"max-size": "10m"}}, "NetworkMode": "bridge",
                   "RestartPolicy": {"Name": "unless-stopped", "MaximumRetryCount": 0}, "Binds": ["data:/data:rw"],
                   "Init": False, "ShmSize": 64 << 20, "IpcMode": "private"},
    "NetworkSettings": {"Ports": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]}},
}


def test_a_container_declared_as_read_back_shows_no_difference() -> None:
    assert container_differences(DECLARED, INSPECT) == []


@pytest.mark.parametrize("change, expected", [
    # The forms the program used to declare: every `up` would update or replace.
    (lambda d: d["healthcheck"].update(startPeriod="60s"), "healthcheck"),
    (lambda d: d["capabilities"].update(adds=["CHOWN"]), "capabilities"),
    (lambda d: d.update(memorySwap=128), "memorySwap"),
    (lambda d: d.update(restart="always"), "restart"),
    (lambda d: d["ports"][0].update(ip="0.0.0.0"), "ports"),
    (lambda d: d.update(logOpts={"max-size": "10m", "max-file": "3"}), "logOpts"),
    (lambda d: d.update(networkMode="host"), "networkMode"),
])
def test_a_declaration_unlike_the_read_back_is_a_difference(change, expected: str) -> None:
    declared = copy.deepcopy(DECLARED)
    change(declared)
    found = container_differences(declared, INSPECT)
    assert len(found) == 1 and found[0].startswith(expected + ":"), found


def test_what_the_program_does_not_declare_counts_only_where_the_schema_has_no_computed_value() -> None:
    inspect = copy.deepcopy(INSPECT)
    inspect["HostConfig"]["Dns"] = ["10.0.0.53"]          # Optional, not Computed: a difference
    inspect["HostConfig"]["IpcMode"] = "shareable"         # Computed: kept, no difference
    found = container_differences(DECLARED, inspect)
    assert [f.split(":")[0] for f in found] == ["dns"]
    assert container_differences(DECLARED, inspect, ignore={"dns": "the test's resolver"}) == []


def test_a_stopped_container_that_must_run_reads_back_as_not_running() -> None:
    inspect = copy.deepcopy(INSPECT)
    inspect["State"]["Running"] = False
    assert any(f.startswith("mustRun") for f in container_differences(DECLARED, inspect))


def test_a_network_with_only_a_name_reads_back_unchanged() -> None:
    inspect = {"Name": "net", "Driver": "bridge", "Options": {}, "Internal": False, "Attachable": False,
               "IPAM": {"Driver": "default", "Options": None, "Config": [{"Subnet": "172.18.0.0/16", "Gateway": "172.18.0.1"}]}}
    assert network_differences({"name": "net"}, inspect) == []
    assert network_differences({"name": "net", "attachable": True}, inspect) != []


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_programs_containers_are_declared_in_the_form_the_provider_reads_back(stack: str) -> None:
    for declared in capture_stack(stack).of_type(CONTAINER):
        inputs = declared.inputs
        for name in ("interval", "timeout", "startPeriod"):
            if "healthcheck" in inputs and name in inputs["healthcheck"]:
                text = inputs["healthcheck"][name]
                assert go_duration(parse_go_duration(text)) == text, (declared.name, name, text)
        if "capabilities" in inputs:
            assert all(c == "ALL" or c.startswith("CAP_") for c in inputs["capabilities"]["adds"]), declared.name
