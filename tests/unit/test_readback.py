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
from tests.e2e.readback import (
    config_differences,
    container_differences,
    go_duration,
    network_differences,
    parse_go_duration,
    secret_differences,
    service_differences,
    short_duration,
)

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


# -- services (Swarm) ---------------------------------------------------------------

SERVICE_DECLARED = {
    "name": "web",
    "mode": {"replicated": {"replicas": 2}},
    "taskSpec": {
        "containerSpec": {
            "image": "sha256:abc", "hostname": "web", "readOnly": True,
            "capAdds": ["CAP_CHOWN"], "capDrops": ["ALL"], "stopGracePeriod": "10s",
            "mounts": [{"target": "/tmp", "type": "tmpfs", "tmpfsOptions": {"sizeBytes": 1 << 20}},
                       {"target": "/data", "type": "volume", "source": "data"}],
            "secrets": [{"secretId": "s1", "secretName": "conf", "fileName": "/etc/web.conf", "fileUid": "0",
                         "fileGid": "33", "fileMode": 0o640}],
            "healthcheck": {"tests": ["CMD", "true"], "interval": "30s", "timeout": "10s", "startPeriod": "1m",
                            "retries": 3},
        },
        "resources": {"limits": {"memoryBytes": 64 << 20}},
        "restartPolicy": {"condition": "any", "delay": "5s", "maxAttempts": 0, "window": "0s"},
        "placement": {"constraints": ["node.labels.mail==true"]},
        "networksAdvanceds": [{"id": "net1", "aliases": ["web"]}],
        "logDriver": {"name": "json-file", "options": {"max-size": "10m"}},
    },
    "updateConfig": {"parallelism": 1, "delay": "5s", "failureAction": "rollback", "monitor": "1m",
                     "maxFailureRatio": "0.0", "order": "start-first"},
    "endpointSpec": {"mode": "dnsrr", "ports": [{"targetPort": 80, "publishedPort": 8080, "publishMode": "host",
                                                 "protocol": "tcp"}]},
}
# docker service inspect of what the provider created from SERVICE_DECLARED (Docker 20.10, trimmed).
SERVICE_INSPECT = {
    "Spec": {
        "Name": "web", "Labels": {},
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": "sha256:abc", "Hostname": "web", "Init": False, "ReadOnly": True,
                "Mounts": [{"Type": "tmpfs", "Target": "/tmp", "TmpfsOptions": {"SizeBytes": 1 << 20}},
                           {"Type": "volume", "Source": "data", "Target": "/data"}],
                "StopGracePeriod": 10 * 10**9,
                "Healthcheck": {"Test": ["CMD", "true"], "Interval": 30 * 10**9, "Timeout": 10 * 10**9,
                                "StartPeriod": 60 * 10**9, "Retries": 3},
                "DNSConfig": {"Nameservers": ["10.0.8.2"]},
                "Secrets": [{"File": {"Name": "/etc/web.conf", "UID": "0", "GID": "33", "Mode": 0o640},
                             "SecretID": "s1", "SecretName": "conf"}],
                "Isolation": "default", "CapabilityAdd": ["CAP_CHOWN"], "CapabilityDrop": ["ALL"],
            },
            "Resources": {"Limits": {"MemoryBytes": 64 << 20}},
            "RestartPolicy": {"Condition": "any", "Delay": 5 * 10**9, "MaxAttempts": 0, "Window": 0},
            "Placement": {"Constraints": ["node.labels.mail==true"]},
            "Networks": [{"Target": "net1", "Aliases": ["web"]}],
            "LogDriver": {"Name": "json-file", "Options": {"max-size": "10m"}},
            "ForceUpdate": 0, "Runtime": "container",
        },
        "Mode": {"Replicated": {"Replicas": 2}},
        "UpdateConfig": {"Parallelism": 1, "Delay": 5 * 10**9, "FailureAction": "rollback", "Monitor": 60 * 10**9,
                         "MaxFailureRatio": 0, "Order": "start-first"},
        "EndpointSpec": {"Mode": "dnsrr", "Ports": [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080,
                                                     "PublishMode": "host"}]},
    },
    "Endpoint": {"Spec": {"Mode": "dnsrr"}, "Ports": [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080,
                                                        "PublishMode": "host"}]},
}


@pytest.mark.parametrize("nanoseconds, text", [
    (0, "0s"), (5 * 10**9, "5s"), (60 * 10**9, "1m"), (90 * 10**9, "1m30s"), (3600 * 10**9, "1h"),
    (9000 * 10**9, "2h30m"), (500 * 10**6, "500ms"),
])
def test_service_durations_read_back_as_the_providers_short_form(nanoseconds: int, text: str) -> None:
    assert short_duration(nanoseconds) == text


def test_a_service_declared_as_read_back_shows_no_difference() -> None:
    # The test's resolver (dnsConfig) is Optional+Computed: undeclared, it keeps what was read.
    assert service_differences(SERVICE_DECLARED, SERVICE_INSPECT) == []


@pytest.mark.parametrize("path, change, expected", [
    # What the real swarm showed: a sticky tmpfs mode is read back as its permission bits only.
    ("taskSpec.containerSpec.mounts.0", lambda m: m["tmpfsOptions"].update(mode=0o1777),
     "taskSpec.containerSpec.mounts"),
    # Container-style durations: "1m0s" is stored as 1m.
    ("taskSpec.containerSpec.healthcheck", lambda h: h.update(startPeriod="1m0s"),
     "taskSpec.containerSpec.healthcheck.startPeriod"),
    ("taskSpec.containerSpec", lambda c: c.update(capAdds=["CHOWN"]), "taskSpec.containerSpec.capAdds"),
    ("taskSpec.restartPolicy", lambda r: r.pop("window"), "taskSpec.restartPolicy.window"),
    ("taskSpec.networksAdvanceds.0", lambda n: n.update(name="net"), "taskSpec.networksAdvanceds"),
    ("updateConfig", lambda u: u.update(maxFailureRatio="0.25"), "updateConfig.maxFailureRatio"),
    ("endpointSpec.ports.0", lambda p: p.update(publishMode="ingress"), "endpointSpec.ports"),
    ("taskSpec.containerSpec.secrets.0", lambda s: s.pop("fileGid"), "taskSpec.containerSpec.secrets"),
])
def test_a_service_declaration_unlike_the_read_back_is_a_difference(path: str, change, expected: str) -> None:
    declared = copy.deepcopy(SERVICE_DECLARED)
    inspect = copy.deepcopy(SERVICE_INSPECT)
    target = declared
    for key in path.split("."):
        target = target[int(key)] if isinstance(target, list) else target[key]
    change(target)
    if expected.endswith("maxFailureRatio"):
        inspect["Spec"]["UpdateConfig"]["MaxFailureRatio"] = 0.25  # stored as float32, printed "0.2"
    if expected == "taskSpec.containerSpec.mounts":
        inspect["Spec"]["TaskTemplate"]["ContainerSpec"]["Mounts"][0]["TmpfsOptions"]["Mode"] = 0o1777
    found = service_differences(declared, inspect)
    assert len(found) == 1 and found[0].startswith(expected + ":"), found


def test_undeclared_computed_blocks_keep_what_was_read_and_ignored_paths_are_skipped() -> None:
    declared = copy.deepcopy(SERVICE_DECLARED)
    del declared["taskSpec"]["placement"], declared["taskSpec"]["restartPolicy"], declared["mode"]
    assert service_differences(declared, SERVICE_INSPECT) == []
    declared["taskSpec"]["containerSpec"]["dnsConfig"] = {"nameservers": ["10.0.0.53"]}
    assert [f.split(":")[0] for f in service_differences(declared, SERVICE_INSPECT)] \
        == ["taskSpec.containerSpec.dnsConfig.nameservers"]
    assert service_differences(declared, SERVICE_INSPECT, ignore={"taskSpec.containerSpec.dnsConfig": "test"}) == []


def test_a_declared_optional_block_that_reads_back_empty_is_a_difference() -> None:
    inspect = copy.deepcopy(SERVICE_INSPECT)
    del inspect["Spec"]["UpdateConfig"]
    assert [f.split(":")[0] for f in service_differences(SERVICE_DECLARED, inspect)] == ["updateConfig"]


def test_a_config_reads_back_its_name_data_and_labels_a_secret_only_its_name() -> None:
    config = {"Spec": {"Name": "c", "Data": "aGVsbG8K", "Labels": {}}}
    assert config_differences({"name": "c", "data": "aGVsbG8K"}, config) == []
    assert config_differences({"name": "c", "data": "aGVsbG8K\n"}, config) != []
    assert secret_differences({"name": "s", "data": "anything"}, {"Spec": {"Name": "s"}}) == []


def test_the_swarm_stacks_services_are_declared_in_the_form_the_provider_reads_back() -> None:
    for declared in capture_stack("swarm").of_type("docker:index/service:Service"):
        container = declared.inputs["taskSpec"]["containerSpec"]
        for name in ("interval", "timeout", "startPeriod"):
            text = container["healthcheck"][name]
            assert short_duration(parse_go_duration(text)) == text, (declared.name, name, text)
        for update in ("updateConfig", "rollbackConfig"):
            for name in ("delay", "monitor"):
                text = declared.inputs[update][name]
                assert short_duration(parse_go_duration(text)) == text, (declared.name, update, text)
