"""The resource graph the program declares, under Pulumi's mocks.

Each test runs the real `__main__.py` for an example stack (offline.capture)
and checks a behaviour a deployment depends on.
"""

from __future__ import annotations

import json
import textwrap
from types import SimpleNamespace
from typing import Any, Callable, Iterator

import pulumi
import pytest

from offline.capture import PROJECT_DIR, Capture, capture, capture_stack, read_stack, string_leaves
from offline.stack_file import StackConfig
from components.settings import ProcessLimits
from offline.dynamic_provider import ProviderFailed, run_provider
from components.render.roundcube import extract_json_document

STACKS = ("dev", "prod")
PROVIDER = "authentik:index/providerOauth2:ProviderOauth2"
CONTAINER = "docker:index/container:Container"
VOLUME = "docker:index/volume:Volume"
IMAGE = "docker:index/image:Image"
PIDS_LIMIT = "pulumi-python:dynamic/roundcube-authentik:PidsLimit"
# The volumes that hold data (mail, queue, Roundcube's database, the directory's folder assignments).
DATA_VOLUMES = {"mail-mail", "mail-postfix-spool", "webmail-database", "mail-directory"}


def stack_config(stack: str) -> StackConfig:
    return read_stack(stack)


def run(stack: str, change: Callable[[StackConfig], StackConfig] | None = None) -> Capture:
    config = stack_config(stack)
    if change:
        config = change(config)
    return capture(stack, config, placeholders=False)


@pytest.fixture(scope="module", params=STACKS)
def declared(request: pytest.FixtureRequest) -> Capture:
    # Real random credentials, as pulumi-random would generate them.
    return capture_stack(request.param, placeholders=False)


def container(c: Capture, service: str):
    return c.one(CONTAINER, f"-{service}")


def container_files(c: Capture, service: str) -> dict[str, str]:
    return {path: u["content"] for path, u in c.uploads(service).items()}


# -- authentik -------------------------------------------------------------------


def test_redirect_uri_is_roundcubes_real_callback_matched_strictly(declared: Capture) -> None:
    settings_url = declared.exports["webmail_url"]
    uris = declared.one(PROVIDER).inputs["allowedRedirectUris"]
    assert uris == [{"matching_mode": "strict", "url": f"{settings_url}/index.php/login/oauth"}]
    assert not any("_task=settings" in u["url"] for u in uris), "the outdated guide URI must not be registered"


def test_one_generated_client_id_and_secret_in_authentik_roundcube_and_dovecot(declared: Capture) -> None:
    provider = declared.one(PROVIDER).inputs
    client_id, client_secret = provider["clientId"], provider["clientSecret"]
    assert len(client_id) == 40 and len(client_secret) == 64 and client_id.isalnum() and client_secret.isalnum()
    roundcube = container_files(declared, "roundcube")["/etc/roundcube/config.inc.php"]
    assert client_id in roundcube and client_secret in roundcube
    # Local token validation (the default): the client id is the audience and
    # the azp under which jwks-sync files authentik's keys; no secret needed.
    dovecot = container_files(declared, "dovecot")
    assert f"  audience = {client_id}" in dovecot["/etc/dovecot/dovecot.conf"].splitlines()
    assert client_secret not in dovecot["/etc/dovecot/dovecot.conf"]
    assert json.loads(dovecot["/etc/dovecot/jwks-sync.json"])["azp"] == client_id
    # Introspection: both credentials in the introspection URL.
    introspecting = run(declared.stack, lambda c: c.with_values(token_validation="introspection"))
    ids = introspecting.one(PROVIDER).inputs
    conf = container_files(introspecting, "dovecot")["/etc/dovecot/dovecot.conf"]
    [line] = [line for line in conf.splitlines() if "introspection_url" in line]
    assert f"://{ids['clientId']}:{ids['clientSecret']}@127.0.0.1:" in line
    # A second run generates other values: nothing is a fixed credential.
    again = capture_stack(declared.stack, placeholders=False).one(PROVIDER).inputs
    assert again["clientSecret"] != client_secret


def test_des_key_reaches_roundcube_only(declared: Capture) -> None:
    files = container_files(declared, "roundcube")["/etc/roundcube/config.inc.php"]
    des_inputs = [r for r in declared.resources if r.name.endswith("roundcube-des-key")]
    assert des_inputs and des_inputs[0].inputs["length"] == 24
    dovecot = container_files(declared, "dovecot")["/etc/dovecot/dovecot.conf"]
    # The key is random, so look for the 24-character value Roundcube got.
    marker = '"des_key"'
    assert marker in files
    value = files.split(marker, 1)[1].split('"')[1]
    assert len(value) == 24 and value not in dovecot


def mapped_scopes(c: Capture) -> set[str]:
    """The scope names the provider's property mappings grant, read off the declared graph."""
    looked_up = {i.args["managed"]: i.args["managed"].rsplit("/scope-", 1)[1]
                 for i in c.invokes if i.token.endswith("getPropertyMappingProviderScope")}
    ids = {f"scope:{scope}": scope for scope in looked_up.values()}  # the mocks' ids of managed mappings
    custom = {m.outputs["id"]: m.inputs["scopeName"]
              for m in c.of_type("authentik:index/propertyMappingProviderScope:PropertyMappingProviderScope")}
    return {ids.get(mapping) or custom[mapping] for mapping in c.one(PROVIDER).inputs["propertyMappings"]}


def requested_scopes(c: Capture) -> list[str]:
    php = container_files(c, "roundcube")["/etc/roundcube/config.inc.php"]
    return extract_json_document(php)["oauth_scope"].split()


def test_every_scope_roundcube_requests_is_mapped_on_the_provider(declared: Capture) -> None:
    # authentik drops requested scopes no mapping grants, silently: no refresh
    # token without offline_access, no introspection without openid.
    requested = requested_scopes(declared)
    assert set(requested) <= mapped_scopes(declared), f"unmapped: {set(requested) - mapped_scopes(declared)}"
    assert {"openid", "email", "offline_access"} <= set(requested)


def test_the_scope_check_catches_a_scope_roundcube_asks_for_that_the_provider_lacks(
    declared: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from components import oauth_scopes
    from components.render import roundcube

    # A Roundcube that asks for one more scope than the provider maps.
    monkeypatch.setattr(roundcube, "OAUTH_SCOPE", " ".join((*oauth_scopes.ROUNDCUBE_SCOPES, "groups")))
    widened = capture(declared.stack, stack_config(declared.stack), placeholders=True)
    assert "groups" in requested_scopes(widened) and "groups" not in mapped_scopes(widened)


def test_the_dovecotprofile_mapping_is_the_one_custom_mapping(declared: Capture) -> None:
    mapping = declared.one("authentik:index/propertyMappingProviderScope:PropertyMappingProviderScope")
    assert mapping.outputs["id"] in declared.one(PROVIDER).inputs["propertyMappings"]
    assert mapping.inputs["scopeName"] in requested_scopes(declared)


def test_containers_reach_an_authentik_on_the_docker_host_by_its_internal_url() -> None:
    dev = capture_stack("dev", placeholders=True)
    roundcube = container_files(dev, "roundcube")["/etc/roundcube/config.inc.php"]
    # The browser is sent to the public URL; Roundcube's own calls take the internal one.
    assert '"oauth_auth_uri": "http://localhost:9000/application/o/authorize/"' in roundcube
    assert '"oauth_token_uri": "http://host.docker.internal:9000/application/o/token/"' in roundcube
    assert '"oauth_identity_uri": "http://host.docker.internal:9000/application/o/userinfo/"' in roundcube
    sync = json.loads(container_files(dev, "dovecot")["/etc/dovecot/jwks-sync.json"])
    assert sync["jwks_url"] == "http://host.docker.internal:9000/application/o/webmail-dev/jwks/"
    issuers = [line for line in container_files(dev, "dovecot")["/etc/dovecot/dovecot.conf"].splitlines() if "issuers =" in line]
    assert issuers == ["  issuers = http://localhost:9000/application/o/webmail-dev/ "
                       "http://host.docker.internal:9000/application/o/webmail-dev/"]
    gateway = [{"host": "host.docker.internal", "ip": "host-gateway"}]
    assert container(dev, "dovecot").inputs["hosts"] == gateway
    assert container(dev, "roundcube").inputs["hosts"] == gateway
    assert not container(dev, "postfix").inputs.get("hosts")
    prod = capture_stack("prod", placeholders=True)
    assert not any(container(prod, s).inputs.get("hosts") for s in ("dovecot", "postfix", "roundcube"))
    sync = json.loads(container_files(prod, "dovecot")["/etc/dovecot/jwks-sync.json"])
    assert sync["jwks_url"] == "https://auth.example.com/application/o/webmail/jwks/"


def test_dovecotprofile_expression_returns_the_guides_claims_for_the_user(declared: Capture) -> None:
    expression = declared.one("authentik:index/propertyMappingProviderScope:PropertyMappingProviderScope").inputs[
        "expression"
    ]
    # authentik runs the body as a function with `request` in scope.
    namespace: dict[str, Any] = {}
    exec("def mapping(request):\n" + textwrap.indent(expression, "    "), namespace)
    user = SimpleNamespace(name="Alice Liddell", username="alice", email="alice@example.test")
    claims = namespace["mapping"](SimpleNamespace(user=user))
    assert claims == {
        "name": "Alice Liddell",
        "given_name": "Alice Liddell",
        "family_name": "",
        "preferred_username": "alice",
        "nickname": "alice",
    }


def test_flows_and_signing_key_are_looked_up_by_the_configured_names() -> None:
    def change(config: StackConfig) -> StackConfig:
        return config.with_values(authorization_flow="my-consent-flow", invalidation_flow="my-logout-flow", signing_key="webmail signing")

    c = run("dev", change)
    flows = [i.args["slug"] for i in c.invokes if i.token.endswith("getFlow")]
    assert sorted(flows) == ["my-consent-flow", "my-logout-flow"]
    keys = [i.args for i in c.invokes if i.token.endswith("getCertificateKeyPair")]
    assert keys == [{"name": "webmail signing", "fetchCertificate": False, "fetchKey": False}]
    provider = c.one(PROVIDER).inputs
    assert provider["authorizationFlow"] == "flow:my-consent-flow"
    assert provider["invalidationFlow"] == "flow:my-logout-flow"
    assert provider["signingKey"] == "keypair:webmail signing"


def test_provider_is_a_confidential_client_with_the_configured_lifetimes() -> None:
    def change(config: StackConfig) -> StackConfig:
        return config.with_values(access_token_validity="minutes=5", refresh_token_validity="days=7;hours=12")

    provider = run("dev", change).one(PROVIDER).inputs
    assert provider["clientType"] == "confidential"
    assert provider["accessTokenValidity"] == "minutes=5"
    assert provider["refreshTokenValidity"] == "days=7;hours=12"
    assert provider["includeClaimsInIdToken"] is True


def test_application_launches_roundcube_and_only_the_group_may_use_it() -> None:
    prod = capture_stack("prod", placeholders=False)
    app = prod.one("authentik:index/application:Application")
    assert app.inputs["slug"] == "webmail"
    assert app.inputs["metaLaunchUrl"] == "https://mail.example.com"
    assert app.inputs["protocolProvider"] == int(prod.one(PROVIDER).outputs["id"])
    binding = prod.one("authentik:index/policyBinding:PolicyBinding")
    assert binding.inputs["group"] == "group:webmail-users"
    assert binding.inputs["target"] == prod.one("authentik:index/application:Application").outputs["uuid"]
    dev = capture_stack("dev", placeholders=False)
    assert dev.of_type("authentik:index/policyBinding:PolicyBinding") == []


# -- secrets -------------------------------------------------------------------


def test_every_secret_bearing_input_and_export_is_secret(declared: Capture) -> None:
    provider = declared.one(PROVIDER)
    secrets = [provider.inputs["clientId"], provider.inputs["clientSecret"], _des_key(declared)]
    assert {"clientId", "clientSecret"} <= provider.secret_paths
    for r in declared.resources:
        for path, value in string_leaves(r.inputs):
            if any(s in value for s in secrets):
                assert any(path == p or path.startswith(p + ".") for p in r.secret_paths), (
                    f"{r.name}.{path} carries a credential but is not secret"
                )
    for name, value in declared.exports.items():
        if name == "client_id":
            continue  # public by OAuth's design, exported on purpose
        if any(s in str(value) for s in secrets):
            assert name in declared.secret_exports, f"export {name} carries a credential but is not secret"
    assert "client_secret" in declared.secret_exports


def test_no_container_gets_configuration_through_its_environment(declared: Capture) -> None:
    for c in declared.of_type(CONTAINER):
        assert not c.inputs.get("envs"), f"{c.name} has environment variables"
        assert not c.inputs.get("command") or not any("secret" in part.lower() for part in c.inputs["command"])


def test_private_key_of_the_tls_certificate_never_enters_the_state() -> None:
    prod = capture_stack("prod", placeholders=False)
    for service in ("dovecot", "postfix"):
        c = container(prod, service).inputs
        mounts = {v["containerPath"]: v for v in c["volumes"] if "containerPath" in v}
        key = mounts["/etc/roundcube-authentik/tls/key.pem"]
        assert key["hostPath"] == "/etc/letsencrypt/live/mail.example.com/privkey.pem" and key["readOnly"] is True
        assert all("PRIVATE KEY" not in value for _, value in string_leaves(c))


def _des_key(c: Capture) -> str:
    config = container_files(c, "roundcube")["/etc/roundcube/config.inc.php"]
    return config.split('"des_key"', 1)[1].split('"')[1]




# -- Docker ------------------------------------------------------------------


def test_volumes_are_protected_retained_and_untouched_by_config_changes(declared: Capture) -> None:
    volumes = {v.name: v for v in declared.of_type(VOLUME)}
    # Besides the data, one volume holds Dovecot's auth socket for Postfix: nothing to keep.
    assert set(volumes) == DATA_VOLUMES | {"mail-sasl"}
    assert all(volumes[v].protect and volumes[v].retain_on_delete for v in DATA_VOLUMES)
    assert not volumes["mail-sasl"].protect and not volumes["mail-sasl"].retain_on_delete

    def change(config: StackConfig) -> StackConfig:
        return config.with_values(roundcube_url="https://webmail.example.org", authentik_url="https://sso.example.org", app_slug="post", mail_hostname="mx.example.org", base_image="registry.example.org/debian:trixie-slim", access_token_validity="minutes=3")

    changed = {v.name: v for v in run(declared.stack, change).of_type(VOLUME)}
    assert {n: v.inputs for n, v in changed.items()} == {n: v.inputs for n, v in volumes.items()}
    # Containers are replaced on such a change and mount the same volumes.
    for service, path in (("dovecot", "/var/mail"), ("roundcube", "/var/lib/roundcube/db")):
        mounts = {m["containerPath"]: m.get("volumeName") for m in container(declared, service).inputs["volumes"] if "containerPath" in m}
        assert mounts[path].startswith(f"roundcube-authentik-{declared.stack}-")


# Another valid value for every setting, as the CLI would send it (on the prod stack).
OTHER_VALUES = {
    "dev": "true",
    "mail_domain": "example.org",
    "mail_hostname": "mx.example.org",
    "roundcube_url": "https://webmail.example.org",
    "authentik_url": "https://sso.example.org",
    "authentik_internal_url": "https://authentik.internal.example",
    "authentik_ca_file": "<a PEM file>",
    "app_name": "Post",
    "app_slug": "post",
    "authorization_flow": "another-authorization-flow",
    "invalidation_flow": "another-invalidation-flow",
    "signing_key": "Another key",
    "allowed_group": "mail-users",
    "access_token_validity": "minutes=3",
    "refresh_token_validity": "days=7",
    "docker_host": "ssh://deploy@mail.example.org",
    "publish_address": "192.0.2.10",
    "publish_addresses": json.dumps({"http": "127.0.0.2", "smtp": "0.0.0.0"}),
    "ports": json.dumps({"http": 8081, "smtp": 2525, "submission": 465, "imaps": 9993}),
    "memory_mb": json.dumps({"dovecot": 1024, "postfix": 128, "roundcube": 768}),
    "pids_limit": json.dumps({"dovecot": 2000, "opendkim": 100}),
    "mailbox_quota": "10G",
    "relay_host": "[smtp.example.net]:587",
    "base_image": "registry.example.org/debian:trixie-slim",
    "image_rebuild": "2026-12-01",
    "protect_volumes": "false",
    "tls": json.dumps({"cert_file": "/etc/ssl/mail/cert.pem", "key_file": "/etc/ssl/mail/key.pem"}),
    "dkim_selector": "s202706",
    "dkim_extra_selectors": json.dumps(["s202601"]),
    "dmarc_policy": "reject",
    "report_address": "postmaster@example.com",
    "mta_sts_mode": "enforce",
    "relay_spf_include": "spf.example.net",
    "dnsbl_sites": json.dumps(["zen.spamhaus.org*2"]),
    "token_validation": "introspection",
    "jwks_refresh_seconds": "300",
    "directory": json.dumps({"source": "authentik", "postmaster": "hostmaster@example.com", "interval": 300}),
    "clients": json.dumps({"app_passwords": False, "cache_seconds": 30}),
    "roundcube_replicas": "1",
    "deployment": "swarm",
    "swarm": json.dumps({"mail_node_label": "mail"}),
}


def test_every_setting_has_another_value_in_the_volume_test() -> None:
    from components.settings import Settings

    assert set(OTHER_VALUES) == set(Settings.model_fields)


@pytest.mark.parametrize("setting", sorted(OTHER_VALUES))
def test_changing_any_one_setting_never_replaces_or_deletes_a_volume(setting: str, tmp_path: Any) -> None:
    before = capture_stack("prod", placeholders=True)
    value = OTHER_VALUES[setting]
    if value == "<a PEM file>":
        pem = tmp_path / "ca.pem"
        pem.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
        value = str(pem)

    def change(config: StackConfig) -> StackConfig:
        assert config.get(setting) != value
        if setting == "relay_spf_include":  # only meaningful with a relay
            config = config.with_values(relay_host="[smtp.example.net]:587")
        if setting == "deployment":
            # Moving to a swarm, one Roundcube on its sqlite: every volume stays
            # (README: several replicas move Roundcube's data to PostgreSQL).
            config = config.with_values(publish_addresses=json.dumps({"http": "0.0.0.0"}), roundcube_replicas="1")
        return config.with_values(**{setting: value})

    after = run("prod", change)
    old = {v.name: v for v in before.of_type(VOLUME)}
    new = {v.name: v for v in after.of_type(VOLUME)}
    assert set(new) == set(old), "a volume was added or removed"
    for name, volume in new.items():
        # Same inputs: Pulumi has nothing to replace. Data retained on delete whatever happens.
        assert volume.inputs == old[name].inputs, name
        assert not volume.delete_before_replace, name
        assert volume.parent_name == old[name].parent_name, name
        if name in DATA_VOLUMES:
            assert volume.retain_on_delete, name
        if setting != "protect_volumes":
            assert volume.protect == old[name].protect, name
    for service in ("dovecot", "postfix", "roundcube"):
        before_mounts = {(m["volumeName"], m["containerPath"]) for m in container(before, service).inputs["volumes"]
                         if "volumeName" in m}
        assert _volume_mounts(after, service) == before_mounts, service


def _volume_mounts(c: Capture, service: str) -> set[tuple[str, str]]:
    """(volume, path) a service mounts, as a container or as a Swarm service."""
    services = [s for s in c.of_type("docker:index/service:Service") if s.name.endswith(f"-{service}")]
    if services:
        return {(m["source"], m["target"]) for m in services[0].inputs["taskSpec"]["containerSpec"]["mounts"]
                if m["type"] == "volume"}
    return {(m["volumeName"], m["containerPath"]) for m in container(c, service).inputs["volumes"] if "volumeName" in m}


def test_unprotecting_volumes_is_an_explicit_setting() -> None:
    def change(config: StackConfig) -> StackConfig:
        return config.with_values(protect_volumes="false")

    volumes = [v for v in run("dev", change).of_type(VOLUME) if v.name in DATA_VOLUMES]
    assert len(volumes) == len(DATA_VOLUMES) and not any(v.protect for v in volumes)
    assert all(v.retain_on_delete for v in volumes), "even unprotected, a destroy keeps the data on the host"


def test_each_container_is_on_the_private_network_under_its_service_name(declared: Capture) -> None:
    network = declared.one("docker:index/network:Network").inputs["name"]
    assert network == f"roundcube-authentik-{declared.stack}-private"
    for service in ("dovecot", "postfix", "roundcube", "opendkim"):
        networks = container(declared, service).inputs["networksAdvanced"]
        assert networks == [{"name": network, "aliases": [service]}]


@pytest.mark.parametrize(
    "stack, expected",
    [
        ("dev", {"roundcube": {(8080, 80, "127.0.0.1")},
                 "postfix": {(2525, 25, "127.0.0.1"), (5587, 587, "127.0.0.1")},
                 "dovecot": {(1143, 143, "127.0.0.1")}, "opendkim": set()}),
        ("prod", {"roundcube": {(8080, 80, "127.0.0.1")},
                  "postfix": {(25, 25, "0.0.0.0"), (587, 587, "0.0.0.0")},
                  "dovecot": {(993, 993, "0.0.0.0")}, "opendkim": set()}),
    ],
)
def test_only_the_configured_ports_are_published_each_on_its_address(
    stack: str, expected: dict[str, set[tuple[int, int, str]]]
) -> None:
    c = capture_stack(stack, placeholders=True)
    for service, ports in expected.items():
        published = container(c, service).inputs.get("ports", [])
        assert {(p["external"], p["internal"], p["ip"]) for p in published} == ports


def test_prods_plain_http_is_published_on_loopback_only_for_the_tls_proxy() -> None:
    c = capture_stack("prod", placeholders=True)
    addresses = {p["ip"] for p in container(c, "roundcube").inputs["ports"]}
    assert addresses == {"127.0.0.1"}, "Roundcube's plain HTTP must not be reachable around the TLS proxy"


def test_a_port_can_be_published_on_its_own_address() -> None:
    def change(config: StackConfig) -> StackConfig:
        return config.with_values(publish_addresses=json.dumps({"http": "10.0.0.5", "smtp": "192.0.2.10"}))

    c = run("prod", change)
    assert {p["ip"] for p in container(c, "roundcube").inputs["ports"]} == {"10.0.0.5"}
    by_port = {p["internal"]: p["ip"] for p in container(c, "postfix").inputs["ports"]}
    assert by_port == {25: "192.0.2.10", 587: "0.0.0.0"}


def test_every_container_is_locked_down_with_its_own_capabilities_limits_and_healthcheck(declared: Capture) -> None:
    from components.service import CAPABILITIES, LOG_OPTS, SCRATCH

    for service in ("dovecot", "postfix", "roundcube", "opendkim"):
        inputs = container(declared, service).inputs
        assert inputs["capabilities"] == {"adds": sorted(f"CAP_{c}" for c in CAPABILITIES[service]), "drops": ["ALL"]}
        assert all(reason for reason in CAPABILITIES[service].values()), "each kept capability says why"
        assert inputs["securityOpts"] == ["no-new-privileges:true"]
        assert inputs["memory"] == inputs["memorySwap"] > 0
        assert inputs["logDriver"] == "json-file" and inputs["logOpts"] == LOG_OPTS
        assert inputs["restart"] == "unless-stopped"
        assert inputs["healthcheck"]["tests"][0] == "CMD"
        assert "privileged" not in inputs
        # A read-only root: the daemon writes only to its tmpfs and volumes,
        # and reads its config from its carrier's volumes, read-only.
        assert inputs["readOnly"] is True and inputs["tmpfs"] == SCRATCH[service]
        assert "uploads" not in inputs
        carrier = declared.config_carrier(service)
        from_carrier = [v["fromContainer"] for v in inputs["volumes"] if "fromContainer" in v]
        assert from_carrier == [f"{carrier.outputs.get('id', carrier.name + '-id')}:ro"], from_carrier


def test_each_config_carrier_holds_only_the_uploads_and_never_runs(declared: Capture) -> None:
    from components.containers import config_folders

    carriers = [c for c in declared.of_type(CONTAINER) if c.name.endswith("-config")]
    # dovecot, postfix, roundcube, opendkim and the directory sync
    assert len(carriers) == 5
    for carrier in carriers:
        inputs = carrier.inputs
        assert inputs["start"] is False and inputs["mustRun"] is False and inputs["networkMode"] == "none"
        assert not inputs.get("ports") and not inputs.get("networksAdvanced") and not inputs.get("envs")
        files = [u["file"] for u in inputs["uploads"]]
        folders = [v["containerPath"] for v in inputs["volumes"]]
        assert folders == config_folders(files) and all("volumeName" not in v for v in inputs["volumes"])
        # Every uploaded file lands in one of the carrier's volumes, none in its root.
        assert all(any(f.startswith(folder + "/") for folder in folders) for f in files)
        assert carrier.delete_before_replace


def test_config_folders_are_the_uploads_outermost_folders_and_refuse_etc_itself() -> None:
    from components.containers import config_folders

    assert config_folders(["/etc/a/x", "/etc/a/keys/k", "/etc/b/c/y"]) == ["/etc/a", "/etc/b/c"]
    with pytest.raises(ValueError, match="/etc"):
        config_folders(["/etc/opendkim.conf"])


def test_every_daemon_gets_its_process_limit_on_the_stacks_docker_engine(declared: Capture) -> None:
    limits = {r.name.removesuffix("-pids-limit"): r for r in declared.of_type(PIDS_LIMIT)}
    services = ("dovecot", "postfix", "roundcube", "opendkim", "directory")
    assert set(limits) == {container(declared, s).name for s in services}
    defaults = ProcessLimits()
    for service in services:
        daemon = container(declared, service)
        inputs = limits[daemon.name].inputs
        assert inputs["container_id"] == daemon.outputs.get("id", f"{daemon.name}-id")
        assert inputs["pids_limit"] == getattr(defaults, service)
        # The engine the docker provider talks to.
        assert inputs["docker_host"] == declared.one("pulumi:providers:docker").inputs["host"]
        # The provider travels in the state (dill, by value), as Pulumi's dynamic resources do.
        assert inputs["__provider"]

    def change(config: StackConfig) -> StackConfig:
        return config.with_values(pids_limit=json.dumps({"postfix": 64}), docker_host="ssh://deploy@mail.example.org")

    c = run(declared.stack, change)
    postfix = {r.name: r.inputs for r in c.of_type(PIDS_LIMIT)}[container(c, "postfix").name + "-pids-limit"]
    assert (postfix["pids_limit"], postfix["docker_host"]) == (64, "ssh://deploy@mail.example.org")


def test_the_process_limit_provider_travels_whole_in_the_state() -> None:
    """Pulumi's provider host loads it from the state alone: here an isolated interpreter
    that cannot import this checkout. It gets as far as calling Docker (absent here)."""
    declared = capture_stack("dev", placeholders=True).one(PIDS_LIMIT, "-roundcube-pids-limit")
    news = {"docker_host": "unix:///nonexistent/docker.sock", "container_id": "c0ffee", "pids_limit": 64}
    with pytest.raises(ProviderFailed) as failed:
        run_provider(declared.inputs, news)
    assert str(failed.value).startswith("docker.errors.DockerException") and "Connection aborted" in str(failed.value)


def test_memory_limits_are_settings() -> None:
    def change(config: StackConfig) -> StackConfig:
        return config.with_values(memory_mb=json.dumps({"dovecot": 1024}))

    c = run("prod", change)
    assert container(c, "dovecot").inputs["memory"] == 1024
    assert container(c, "postfix").inputs["memory"] == 256


def test_a_new_image_rebuild_stamp_rebuilds_every_image_and_replaces_containers_but_no_volume() -> None:
    before = capture_stack("prod", placeholders=True)

    def change(config: StackConfig) -> StackConfig:
        return config.with_values(image_rebuild="2026-12-01")

    after = run("prod", change)
    for service in ("dovecot", "postfix", "roundcube"):
        image = after.one(IMAGE, f"-{service}")
        assert image.inputs["build"]["args"]["IMAGE_REBUILD"] == "2026-12-01"
        assert image.inputs != before.one(IMAGE, f"-{service}").inputs  # a changed input: Pulumi rebuilds
        # The container runs the new image (Pulumi replaces it); its mounts stay.
        assert container(after, service).inputs["image"] != container(before, service).inputs["image"]
        assert container(after, service).inputs["volumes"] == container(before, service).inputs["volumes"]
    assert {v.name: v.inputs for v in after.of_type(VOLUME)} == {v.name: v.inputs for v in before.of_type(VOLUME)}
    # Each Dockerfile declares the stamp before its package steps, so the cache misses there.
    for service in ("dovecot", "postfix", "roundcube"):
        dockerfile = (PROJECT_DIR / "images" / service / "Dockerfile").read_text()
        assert dockerfile.index("ARG IMAGE_REBUILD") < dockerfile.index("apt-get upgrade") < dockerfile.index("apt-get install")


def test_images_are_built_from_the_projects_dockerfiles_on_the_configured_base(declared: Capture) -> None:
    images = {i.name: i.inputs for i in declared.of_type(IMAGE)}
    assert set(images) == {"images-dovecot", "images-postfix", "images-roundcube", "images-opendkim"}
    for name, image in images.items():
        service = name.removeprefix("images-")
        assert image["build"]["context"] == f"images/{service}"
        assert (PROJECT_DIR / image["build"]["dockerfile"]).is_file()
        assert image["build"]["args"] == {"BASE_IMAGE": "debian:trixie-slim"}
        assert image["skipPush"] is True
    digests = {i.name.removeprefix("images-"): i.outputs["repoDigest"] for i in declared.of_type(IMAGE)}
    for service in ("dovecot", "postfix", "roundcube", "opendkim"):
        assert container(declared, service).inputs["image"] == digests[service]


def test_exports_name_the_endpoints(declared: Capture) -> None:
    e = declared.exports
    assert set(e) == {
        "webmail_url", "application_slug", "launch_url", "client_id", "client_secret",
        "imap_endpoint", "submission_endpoint", "dns_records",
    } | ({"mta_sts_policy"} if declared.stack == "prod" else set())
    assert e["launch_url"] == e["webmail_url"]
    assert e["client_id"] == declared.one(PROVIDER).inputs["clientId"]
    if declared.stack == "prod":
        assert e["imap_endpoint"] == "imaps://mail.example.com:993"
        assert e["submission_endpoint"] == "smtp://mail.example.com:587"


# -- bad settings ------------------------------------------------------------


NS = "roundcube-authentik"
UNSET = None  # the key is absent from the stack file

# Each row: one kind of bad stack setting, as the Pulumi CLI hands it to the
# program (text; objects as JSON text), on top of the prod example stack, and
# the words the refusal must contain: the setting's name and what is allowed.
BAD_SETTINGS = [
    ("unknown key", {"colour": "blue"}, ["roundcube-authentik:colour: unknown setting", "allowed settings are"]),
    ("unknown key in an object", {"ports": json.dumps({"pop3": 110})}, ["ports.pop3", "unknown setting"]),
    ("http:// URL in prod", {"roundcube_url": "http://mail.example.com"}, ["roundcube_url must be https://"]),
    ("URL with a path", {"roundcube_url": "https://mail.example.com/webmail"}, ["roundcube_url", "must be the site root"]),
    ("URL of another scheme", {"authentik_url": "ftp://auth.example.com"}, ["authentik_url", "must be an http(s):// URL"]),
    ("internal URL http:// in prod", {"authentik_internal_url": "http://authentik:9000"}, ["authentik_internal_url must be https://"]),
    ("domain that is not a DNS name", {"mail_domain": "not a domain"}, ["mail_domain", "must be a DNS name"]),
    ("host name that is not a DNS name", {"mail_hostname": "mail_server"}, ["mail_hostname", "must be a DNS name"]),
    ("lifetime in the wrong syntax", {"access_token_validity": "10 minutes"}, ["access_token_validity", "authentik lifetime syntax like 'minutes=10'"]),
    ("lifetime of zero", {"refresh_token_validity": "seconds=0"}, ["refresh_token_validity", "must be longer than zero"]),
    ("slug with capitals", {"app_slug": "Web Mail"}, ["app_slug", "must be lower-case letters"]),
    ("docker_host of another scheme", {"docker_host": "tcp://10.0.0.1:2375"}, ["docker_host", "must be unix:///path/to/docker.sock or ssh://"]),
    ("port out of range", {"ports": json.dumps({"http": 70000})}, ["ports.http", "must be a port between 1 and 65535"]),
    ("port that is not a number", {"ports": json.dumps({"http": "eighty"})}, ["ports.http", "integer"]),
    ("ports that clash", {"ports": json.dumps({"http": 25})}, ["ports.smtp and ports.http both use port 25; each needs its own"]),
    ("plain IMAP on a public address", {"ports": json.dumps({"imap": 143})}, ["ports.imap (plain IMAP) may only be published on a loopback address"]),
    ("IMAPS without tls", {"tls": UNSET}, ["ports.imaps needs tls"]),
    ("submission in clear on a public address", {"ports": json.dumps({"imaps": None}), "tls": UNSET},
     ["ports.submission on 0.0.0.0 needs tls"]),
    ("relative TLS path", {"tls": json.dumps({"cert_file": "certs/x.pem", "key_file": "/k"})}, ["tls.cert_file", "must be an absolute path on the Docker host"]),
    ("CA file that cannot be read", {"authentik_ca_file": "/nonexistent/ca.pem"}, ["authentik_ca_file", "must be a readable PEM file"]),
    ("publish address that is not an IP", {"publish_address": "example.com"}, ["publish_address", "must be an IP address of the Docker host"]),
    ("per-port address that is not an IP", {"publish_addresses": json.dumps({"http": "localhost"})}, ["publish_addresses.http", "must be an IP address"]),
    ("quota that does not parse", {"mailbox_quota": "5 gigabytes"}, ["mailbox_quota", "must be a size in whole M, G or T such as 500M"]),
    ("memory limit too small", {"memory_mb": json.dumps({"roundcube": 16})}, ["memory_mb.roundcube", "between 64 and 65536"]),
    ("process limit of no use", {"pids_limit": json.dumps({"postfix": 0})}, ["pids_limit.postfix", "between 32 and 65536"]),
    ("relay host that Postfix cannot read", {"relay_host": "smtp.example.net:587:1"}, ["relay_host", "must be a Postfix relayhost such as [smtp.example.net]:587"]),
    ("base image that is no image reference", {"base_image": "Debian Trixie"}, ["base_image", "must be an image reference"]),
    ("rebuild stamp with spaces", {"image_rebuild": "next tuesday"}, ["image_rebuild", "must be a short stamp"]),
    ("boolean that is not one", {"dev": "maybe"}, ["roundcube-authentik:dev", "boolean"]),
    ("required setting missing", {"mail_domain": UNSET}, ["roundcube-authentik:mail_domain: required, not set"]),
    ("no directory chosen", {"directory": UNSET},
     ["roundcube-authentik:directory: required, not set", "postmaster@ and abuse@", "`directory: open`"]),
    ("directory source unknown", {"directory": "ldap"}, ["roundcube-authentik:directory", "must be authentik or open"]),
    ("directory without postmaster", {"directory": json.dumps({"source": "authentik"})},
     ["roundcube-authentik:directory", "postmaster is required with source authentik"]),
    ("directory postmaster not an address", {"directory": json.dumps({"postmaster": "the admins"})},
     ["roundcube-authentik:directory.postmaster", "must be an email address"]),
    ("directory read too often", {"directory": json.dumps({"postmaster": "a@example.com", "interval": 1})},
     ["roundcube-authentik:directory.interval", "between 10 and 86400"]),
]


@pytest.mark.parametrize("kind, changes, expected", BAD_SETTINGS, ids=[row[0] for row in BAD_SETTINGS])
def test_bad_settings_stop_the_program_before_any_resource(
    kind: str, changes: dict[str, str | None], expected: list[str]
) -> None:
    config = stack_config("prod")
    for key, value in changes.items():
        config = config.without(key) if value is UNSET else config.with_values(**{key: value})
    with pytest.raises(pulumi.RunError) as raised:
        capture("prod", config, placeholders=True)
    text = str(raised.value)
    assert raised.value.declared == []  # type: ignore[attr-defined]
    for words in expected:
        assert words in text, f"{kind}: {words!r} not in:\n{text}"


def test_the_bad_settings_table_covers_at_least_twenty_kinds() -> None:
    assert len({row[0] for row in BAD_SETTINGS}) >= 20


def test_a_missing_setting_is_named() -> None:
    config = stack_config("dev").without("mail_domain")
    with pytest.raises(pulumi.RunError, match="roundcube-authentik:mail_domain: required, not set"):
        capture("dev", config, placeholders=True)


def test_http_is_allowed_only_in_a_dev_stack() -> None:
    config = stack_config("dev").with_values(dev="false")
    with pytest.raises(pulumi.RunError) as raised:
        capture("dev", config, placeholders=True)
    assert "roundcube_url must be https:// in a stack that is not marked dev: true, got http://localhost:8080" in str(raised.value)
    assert "authentik_url must be https://" in str(raised.value)


def test_text_settings_stay_text_whatever_they_look_like() -> None:
    config = stack_config("dev").with_values(app_name="2026", allowed_group='{"not": "json"}')
    c = capture("dev", config, placeholders=True)
    assert c.one("authentik:index/application:Application").inputs["name"] == "2026"
    assert [i.args["name"] for i in c.invokes if i.token.endswith("getGroup")] == ['{"not": "json"}']


# -- the mail directory --------------------------------------------------------------

USER = "authentik:index/user:User"
GROUP = "authentik:index/group:Group"
ROLE = "authentik:index/rbacRole:RbacRole"
PERMISSION = "authentik:index/rbacPermissionRole:RbacPermissionRole"
TOKEN = "authentik:index/token:Token"


def test_the_directory_reads_authentik_with_an_account_that_may_only_view_users_and_groups(declared: Capture) -> None:
    account = declared.one(USER)
    assert account.inputs["type"] == "service_account" and "password" not in account.inputs
    role = declared.one(ROLE)
    permissions = declared.of_type(PERMISSION)
    assert sorted(p.inputs["permission"] for p in permissions) == ["authentik_core.view_group", "authentik_core.view_user"]
    assert all(p.inputs["role"] == role.outputs["id"] and "objectId" not in p.inputs for p in permissions)
    # The role reaches the account through a group that is no superuser group, and nothing else does.
    group = declared.one(GROUP)
    assert group.inputs["isSuperuser"] is False
    assert group.inputs["roles"] == [role.outputs["id"]]
    assert group.inputs["users"] == [int(account.outputs["id"])]
    token = declared.one(TOKEN)
    assert token.inputs["intent"] == "api" and token.inputs["retrieveKey"] is True and token.inputs["expiring"] is False
    assert token.inputs["user"] == int(account.outputs["id"])
    # The SDK keeps the key secret in the state.
    assert "key" in token.additional_secret_outputs


def test_the_directory_key_reaches_only_the_sync_as_a_file_it_alone_can_read(declared: Capture) -> None:
    key = declared.one(TOKEN).outputs["key"]
    assert len(key) >= 40
    uploads = declared.uploads("directory")
    token_file = uploads["/etc/roundcube-authentik/directory/token"]
    assert token_file["content"] == key
    assert (token_file["permissions"], token_file["owner"], token_file["group"]) == ("0600", "5020", "5020")
    carrier = declared.config_carrier("directory")
    index = carrier.inputs["uploads"].index(token_file)
    assert f"uploads.{index}.content" in carrier.secret_paths or "uploads" in carrier.secret_paths
    # Nowhere else: no other input of any resource, no environment, no output.
    for resource in declared.resources:
        if resource is carrier or resource.type == TOKEN:
            continue
        assert all(key not in text for _, text in string_leaves(resource.inputs)), resource.name
    assert all(key not in text for _, text in string_leaves(declared.exports))
    sync = container(declared, "directory").inputs
    assert "envs" not in sync and sync["user"] == "5020:5020"
    assert sync["capabilities"] == {"adds": [], "drops": ["ALL"]} and sync["readOnly"] is True


def test_postfix_and_dovecot_read_the_directory_and_only_the_sync_writes_it(declared: Capture) -> None:
    directory = "/var/lib/roundcube-authentik/directory"
    for service, read_only in (("directory", None), ("postfix", True), ("dovecot", True)):
        mounts = {v["containerPath"]: v for v in container(declared, service).inputs["volumes"] if "containerPath" in v}
        assert mounts[directory]["volumeName"] == f"roundcube-authentik-{declared.stack}-directory"
        assert mounts[directory].get("readOnly") is read_only, service
    main = container_files(declared, "postfix")["/etc/postfix/main.cf"]
    assert f"virtual_mailbox_maps = hash:{directory}/mailboxes" in main
    assert f"smtpd_sender_login_maps = hash:{directory}/senders" in main
    sync = json.loads(container_files(declared, "directory")["/etc/roundcube-authentik/directory/sync.json"])
    assert sync["postmaster"] and sync["output_dir"] == directory and sync["interval"] == 60
    assert sync["api_url"] == (stack_config(declared.stack).get("authentik_internal_url")
                               or stack_config(declared.stack).get("authentik_url"))


def test_an_open_directory_declares_no_account_no_sync_and_accepts_every_local_part() -> None:
    c = run("dev", lambda config: config.with_values(directory="open"))
    for kind in (USER, GROUP, ROLE, PERMISSION, TOKEN):
        assert c.of_type(kind) == [], kind
    assert not [r for r in c.of_type(CONTAINER) if r.name.endswith("-directory")]
    main = container_files(c, "postfix")["/etc/postfix/main.cf"]
    assert "virtual_mailbox_maps" not in main
