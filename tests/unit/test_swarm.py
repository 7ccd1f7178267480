"""The swarm example stack's graph (deployment: swarm), under Pulumi's mocks:
the same service descriptions as containers, turned into Swarm services."""

from __future__ import annotations

import base64
import json
import re

import pulumi
import pytest

from components.render.roundcube import extract_json_document
from components.swarm import tmpfs_mode
from offline.capture import Capture, capture, capture_stack, read_stack
from tests.e2e.readback import parse_go_duration

SERVICE = "docker:index/service:Service"
SECRET = "docker:index/secret:Secret"
CONFIG = "docker:index/serviceConfig:ServiceConfig"
CONTAINER = "docker:index/container:Container"
NETWORK = "docker:index/network:Network"
MAIL_SERVICES = ("dovecot", "postfix", "opendkim", "directory", "postgres", "balancer")


@pytest.fixture(scope="module")
def swarm() -> Capture:
    return capture_stack("swarm", placeholders=False)


def service(c: Capture, name: str):
    return c.one(SERVICE, f"-{name}")


def spec(c: Capture, name: str) -> dict:
    return service(c, name).inputs["taskSpec"]


def mounted_files(c: Capture, name: str) -> dict[str, str]:
    """Path -> content of every config and secret a service mounts."""
    by_id = {r.outputs["id"]: r for r in c.of_type(SECRET) + c.of_type(CONFIG)}
    container = spec(c, name)["containerSpec"]
    found = {}
    for item in container.get("configs", []) + container.get("secrets", []):
        resource = by_id[item.get("configId") or item.get("secretId")]
        found[item["fileName"]] = base64.b64decode(resource.inputs["data"]).decode()
    return found


def test_a_swarm_stack_declares_services_and_no_container(swarm: Capture) -> None:
    assert swarm.of_type(CONTAINER) == []
    names = sorted(r.name.split("-", 1)[1] for r in swarm.of_type(SERVICE))
    assert names == ["balancer", "directory", "dovecot", "opendkim", "postfix", "postgres", "roundcube"]
    assert swarm.one(NETWORK).inputs["driver"] == "overlay"


def test_roundcube_runs_replicated_behind_the_balancer_which_alone_publishes_http(swarm: Capture) -> None:
    roundcube, balancer = service(swarm, "roundcube").inputs, service(swarm, "balancer").inputs
    assert roundcube["mode"]["replicated"]["replicas"] == 2
    assert "ports" not in roundcube["endpointSpec"]
    assert balancer["endpointSpec"]["ports"] == [
        {"targetPort": 80, "publishedPort": 8080, "publishMode": "host", "protocol": "tcp"}]
    # Replicas come and go without a gap; the mail daemons never overlap on their volumes.
    assert roundcube["updateConfig"]["order"] == "start-first"
    assert all(service(swarm, s).inputs["updateConfig"]["order"] == "stop-first" for s in MAIL_SERVICES)
    assert all(service(swarm, s).inputs["updateConfig"]["failureAction"] == "rollback" for s in (*MAIL_SERVICES, "roundcube"))


def test_the_mail_services_and_postgres_are_placed_on_the_mail_node(swarm: Capture) -> None:
    for name in MAIL_SERVICES:
        assert spec(swarm, name)["placement"]["constraints"] == ["node.labels.roundcube-authentik.mail==true"], name
    assert "placement" not in spec(swarm, "roundcube")


def test_every_service_is_locked_down_as_a_container_is(swarm: Capture) -> None:
    network = swarm.one(NETWORK).outputs["id"]
    for resource in swarm.of_type(SERVICE):
        task = resource.inputs["taskSpec"]
        container = task["containerSpec"]
        assert container["readOnly"] is True, resource.name
        assert container["capDrops"] == ["ALL"] and all(c.startswith("CAP_") for c in container.get("capAdds", []))
        assert "env" not in container, "credentials travel as secrets, never in the environment"
        assert task["resources"]["limits"]["memoryBytes"] > 0
        assert task["logDriver"] == {"name": "json-file", "options": {"max-size": "10m", "max-file": "3"}}
        assert task["restartPolicy"] == {"condition": "any", "delay": "5s", "maxAttempts": 0, "window": "0s"}
        assert task["networksAdvanceds"][0]["id"] == network
        assert resource.inputs["endpointSpec"]["mode"] == "dnsrr"
        health = container["healthcheck"]
        # As the provider reads service durations back: "1m", never "1m0s".
        for key in ("interval", "timeout", "startPeriod"):
            assert "m0s" not in health[key] and parse_go_duration(health[key]) > 0, health
        assert all(m["type"] in ("volume", "tmpfs", "bind") for m in container["mounts"])


def test_credentials_travel_as_docker_secrets_that_are_pulumi_secrets(swarm: Capture) -> None:
    secrets = swarm.of_type(SECRET)
    assert secrets and all("data" in s.secret_paths for s in secrets)
    client_secret = swarm.one("authentik:index/providerOauth2:ProviderOauth2").inputs["clientSecret"]
    for config in swarm.of_type(CONFIG):
        assert client_secret not in base64.b64decode(config.inputs["data"]).decode(), config.name
    roundcube = mounted_files(swarm, "roundcube")["/etc/roundcube/config.inc.php"]
    settings = extract_json_document(roundcube)
    assert settings["db_dsnw"].startswith("pgsql://roundcube:") and settings["plugins"] == ["database_attachments"]
    password = mounted_files(swarm, "postgres")["/run/secrets/roundcube-db-password"].strip()
    assert f"roundcube:{password}@postgres:5432/roundcube" in settings["db_dsnw"]
    assert any(s.inputs["name"].startswith("roundcube-authentik-swarm-postgres-roundcube-db-") for s in secrets)


# swarmkit's rule for secret and config names (the daemon answered `invalid name, only 64
# [a-zA-Z0-9-_.] characters allowed, and the start and end character must be [a-zA-Z0-9]`
# for roundcube-authentik-swarm-dovecot-app-password-check-json-<digest>, 70 characters).
DOCKER_OBJECT_NAME = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9_.-]{0,62}[a-zA-Z0-9])?")


# The second: the longest stack name whose service names still fit a DNS label (63).
@pytest.mark.parametrize("stack", ["swarm", "production-eu-west-2-mail-cluster"])
def test_secret_and_config_names_are_ones_docker_accepts_and_each_is_its_own(stack: str) -> None:
    declared = capture(stack, read_stack("swarm"))
    names = [r.inputs["name"] for r in declared.of_type(SECRET) + declared.of_type(CONFIG)]
    assert all(DOCKER_OBJECT_NAME.fullmatch(n) for n in names), [n for n in names if len(n) > 64]
    assert len(set(names)) == len(names)


def test_a_changed_file_is_a_new_config_so_the_service_rolls(swarm: Capture) -> None:
    later = capture("swarm", read_stack("swarm").with_values(mailbox_quota="6G"), placeholders=False, earlier=swarm)
    before = {r.name: r.inputs["name"] for r in swarm.of_type(SECRET) + swarm.of_type(CONFIG)}
    after = {r.name: r.inputs["name"] for r in later.of_type(SECRET) + later.of_type(CONFIG)}
    changed = {n for n in before if before[n] != after[n]}
    # Dovecot's config (a secret: it may hold the client secret) and the directory sync's default quota.
    assert any("dovecot-conf" in n for n in changed) and any("sync-json" in n for n in changed), changed
    assert not any("opendkim" in n for n in changed)


def test_the_container_stacks_are_unchanged_by_the_swarm_target() -> None:
    for stack in ("dev", "prod"):
        c = capture_stack(stack)
        assert c.of_type(SERVICE) == c.of_type(SECRET) == c.of_type(CONFIG) == []
        assert c.one(NETWORK).inputs["driver"] == "bridge"


def test_swarm_publishes_on_every_address_so_it_asks_for_0_0_0_0() -> None:
    with pytest.raises(Exception, match="publishes ports on every address"):
        capture("swarm", read_stack("swarm").with_values(publish_addresses=json.dumps({"http": "127.0.0.1"})))
    with pytest.raises(Exception, match="roundcube_replicas 3 needs deployment: swarm"):
        capture("prod", read_stack("prod").with_values(roundcube_replicas="3"))


@pytest.mark.parametrize("options, mode", [
    ("size=16m,mode=0755", 0o755),
    # The provider reads `Mode.Perm()` back: 0o1777 would read 0o777, a change on every `up`;
    # tmpfs's own mode without a mode option is 1777.
    ("size=16m,mode=1777", 0),
    # A service tmpfs has no owner: the folder's user gets it from the image or its entrypoint.
    ("size=1m,mode=0755,uid=5030,gid=5030", 0),
])
def test_service_tmpfs_modes_are_permission_bits_the_provider_reads_back(options: str, mode: int) -> None:
    assert tmpfs_mode(options) == mode


def test_every_declared_tmpfs_mode_reads_back_as_declared(swarm: Capture) -> None:
    for resource in swarm.of_type(SERVICE):
        for mount in resource.inputs["taskSpec"]["containerSpec"]["mounts"]:
            if mount["type"] == "tmpfs":
                assert mount["tmpfsOptions"].get("mode", 0) & ~0o777 == 0, (resource.name, mount)


def test_a_stack_name_too_long_for_swarm_service_names_is_refused_before_any_resource() -> None:
    # Swarm names services as DNS labels (swarmkit's validation: at most 63
    # characters, letters, digits, '-' and '_'); "roundcube-authentik-<stack>-directory"
    # would otherwise fail at `pulumi up`, halfway through the update.
    config = read_stack("swarm")
    with pytest.raises(pulumi.RunError) as raised:
        capture("s" * 34, config, placeholders=True)
    text = str(raised.value)
    assert raised.value.declared == []  # type: ignore[attr-defined]
    assert "deployment: swarm" in text and "at most 33 characters" in text and "s" * 34 in text
    with pytest.raises(pulumi.RunError, match="letters, digits"):
        capture("team.mail", config, placeholders=True)
    assert capture("s" * 33, config, placeholders=True).of_type(SERVICE)
    # Containers have no such limit; a long container-mode stack still deploys.
    assert capture("c" * 40, read_stack("dev"), placeholders=True).of_type(CONTAINER)
