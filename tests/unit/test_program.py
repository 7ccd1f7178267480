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

from offline.capture import Capture, capture, capture_stack, read_stack_config, SecretMaker, PROJECT_DIR

STACKS = ("dev", "prod")
PROVIDER = "authentik:index/providerOauth2:ProviderOauth2"
CONTAINER = "docker:index/container:Container"
VOLUME = "docker:index/volume:Volume"
IMAGE = "docker:index/image:Image"


def stack_config(stack: str) -> dict[str, str]:
    return read_stack_config(PROJECT_DIR / "stacks" / f"Pulumi.{stack}.yaml", SecretMaker(placeholders=True))


def run(stack: str, change: Callable[[dict[str, str]], None] | None = None) -> Capture:
    config = stack_config(stack)
    if change:
        change(config)
    return capture(stack, config, placeholders=False)


@pytest.fixture(scope="module", params=STACKS)
def declared(request: pytest.FixtureRequest) -> Capture:
    # Real random credentials, as pulumi-random would generate them.
    return capture_stack(request.param, placeholders=False)


def container(c: Capture, service: str):
    return c.one(CONTAINER, f"-{service}")


def container_files(c: Capture, service: str) -> dict[str, str]:
    return {u["file"]: u["content"] for u in container(c, service).inputs.get("uploads", [])}


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
    introspecting = run(declared.stack, lambda c: c.update({"roundcube-authentik:token_validation": "introspection"}))
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


def test_scopes_are_the_managed_three_plus_dovecotprofile(declared: Capture) -> None:
    provider = declared.one(PROVIDER).inputs
    mapping = declared.one("authentik:index/propertyMappingProviderScope:PropertyMappingProviderScope")
    managed = sorted(i.args["managed"] for i in declared.invokes if i.token.endswith("getPropertyMappingProviderScope"))
    assert managed == sorted(
        f"goauthentik.io/providers/oauth2/scope-{s}" for s in ("openid", "email", "offline_access")
    )
    assert provider["propertyMappings"][:3] == ["scope:openid", "scope:email", "scope:offline_access"]
    assert len(provider["propertyMappings"]) == 4 and provider["propertyMappings"][3] not in provider["propertyMappings"][:3]
    assert mapping.inputs["scopeName"] == "dovecotprofile"
    roundcube = container_files(declared, "roundcube")["/etc/roundcube/config.inc.php"]
    assert "openid email offline_access dovecotprofile" in roundcube


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
    def change(config: dict[str, str]) -> None:
        config["roundcube-authentik:authorization_flow"] = "my-consent-flow"
        config["roundcube-authentik:invalidation_flow"] = "my-logout-flow"
        config["roundcube-authentik:signing_key"] = "webmail signing"

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
    def change(config: dict[str, str]) -> None:
        config["roundcube-authentik:access_token_validity"] = "minutes=5"
        config["roundcube-authentik:refresh_token_validity"] = "days=7;hours=12"

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
        for path, value in _leaves(r.inputs):
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
        mounts = {v["containerPath"]: v for v in c["volumes"]}
        key = mounts["/etc/roundcube-authentik/tls/key.pem"]
        assert key["hostPath"] == "/etc/letsencrypt/live/mail.example.com/privkey.pem" and key["readOnly"] is True
        assert all("PRIVATE KEY" not in value for _, value in _leaves(c))


def _des_key(c: Capture) -> str:
    config = container_files(c, "roundcube")["/etc/roundcube/config.inc.php"]
    return config.split('"des_key"', 1)[1].split('"')[1]


def _leaves(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, f"{path}.{k}" if path else k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(v, f"{path}.{i}" if path else str(i))
    elif isinstance(value, str):
        yield path, value


# -- Docker ------------------------------------------------------------------


def test_volumes_are_protected_retained_and_untouched_by_config_changes(declared: Capture) -> None:
    volumes = {v.name: v for v in declared.of_type(VOLUME)}
    assert set(volumes) == {"mail-mail", "mail-postfix-spool", "webmail-database"}
    assert all(v.protect and v.retain_on_delete for v in volumes.values())

    def change(config: dict[str, str]) -> None:
        config["roundcube-authentik:roundcube_url"] = "https://webmail.example.org"
        config["roundcube-authentik:authentik_url"] = "https://sso.example.org"
        config["roundcube-authentik:app_slug"] = "post"
        config["roundcube-authentik:mail_hostname"] = "mx.example.org"
        config["roundcube-authentik:base_image"] = "registry.example.org/debian:trixie-slim"
        config["roundcube-authentik:access_token_validity"] = "minutes=3"

    changed = {v.name: v for v in run(declared.stack, change).of_type(VOLUME)}
    assert {n: v.inputs for n, v in changed.items()} == {n: v.inputs for n, v in volumes.items()}
    # Containers are replaced on such a change and mount the same volumes.
    for service, path in (("dovecot", "/var/mail"), ("roundcube", "/var/lib/roundcube/db")):
        mounts = {m["containerPath"]: m.get("volumeName") for m in container(declared, service).inputs["volumes"]}
        assert mounts[path].startswith(f"roundcube-authentik-{declared.stack}-")


def test_unprotecting_volumes_is_an_explicit_setting() -> None:
    def change(config: dict[str, str]) -> None:
        config["roundcube-authentik:protect_volumes"] = "false"

    volumes = run("dev", change).of_type(VOLUME)
    assert volumes and not any(v.protect for v in volumes)
    assert all(v.retain_on_delete for v in volumes), "even unprotected, a destroy keeps the data on the host"


def test_each_container_is_on_the_private_network_under_its_service_name(declared: Capture) -> None:
    network = declared.one("docker:index/network:Network").inputs["name"]
    assert network == f"roundcube-authentik-{declared.stack}-private"
    for service in ("dovecot", "postfix", "roundcube"):
        networks = container(declared, service).inputs["networksAdvanced"]
        assert networks == [{"name": network, "aliases": [service]}]


@pytest.mark.parametrize(
    "stack, expected",
    [
        ("dev", {"roundcube": {(8080, 80)}, "postfix": {(2525, 25), (5587, 587)}, "dovecot": {(1143, 143)}}),
        ("prod", {"roundcube": {(8080, 80)}, "postfix": {(25, 25), (587, 587)}, "dovecot": {(993, 993)}}),
    ],
)
def test_only_the_configured_ports_are_published(stack: str, expected: dict[str, set[tuple[int, int]]]) -> None:
    c = capture_stack(stack, placeholders=True)
    address = stack_config(stack)["roundcube-authentik:publish_address"]
    for service, ports in expected.items():
        published = container(c, service).inputs.get("ports", [])
        assert {(p["external"], p["internal"]) for p in published} == ports
        assert {p["ip"] for p in published} == {address}


def test_images_are_built_from_the_projects_dockerfiles_on_the_configured_base(declared: Capture) -> None:
    images = {i.name: i.inputs for i in declared.of_type(IMAGE)}
    assert set(images) == {"images-dovecot", "images-postfix", "images-roundcube"}
    for name, image in images.items():
        service = name.removeprefix("images-")
        assert image["build"]["context"] == f"images/{service}"
        assert (PROJECT_DIR / image["build"]["dockerfile"]).is_file()
        assert image["build"]["args"] == {"BASE_IMAGE": "debian:trixie-slim"}
        assert image["skipPush"] is True
    digests = {i.name.removeprefix("images-"): i.outputs["repoDigest"] for i in declared.of_type(IMAGE)}
    for service in ("dovecot", "postfix", "roundcube"):
        assert container(declared, service).inputs["image"] == digests[service]


def test_exports_name_the_endpoints(declared: Capture) -> None:
    e = declared.exports
    assert set(e) == {
        "webmail_url", "application_slug", "launch_url", "client_id", "client_secret",
        "imap_endpoint", "submission_endpoint",
    }
    assert e["launch_url"] == e["webmail_url"]
    assert e["client_id"] == declared.one(PROVIDER).inputs["clientId"]
    if declared.stack == "prod":
        assert e["imap_endpoint"] == "imaps://mail.example.com:993"
        assert e["submission_endpoint"] == "smtp://mail.example.com:587"


# -- bad settings ------------------------------------------------------------


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("roundcube-authentik:colour", "blue", "roundcube-authentik:colour: unknown setting"),
        ("roundcube-authentik:roundcube_url", "http://mail.example.com", "roundcube_url must be https://"),
        ("roundcube-authentik:roundcube_url", "https://mail.example.com/webmail", "must be the site root"),
        ("roundcube-authentik:mail_domain", "not a domain", "roundcube-authentik:mail_domain: must be a DNS name"),
        ("roundcube-authentik:access_token_validity", "10 minutes", "access_token_validity: must be authentik lifetime syntax"),
        ("roundcube-authentik:docker_host", "tcp://10.0.0.1:2375", "docker_host: must be unix:///"),
        ("roundcube-authentik:ports", json.dumps({"http": 70000}), "ports.http: Value error, must be a port"),
        ("roundcube-authentik:ports", json.dumps({"http": 25}), "ports.smtp and ports.http both use port 25"),
        ("roundcube-authentik:ports", json.dumps({"imap": 143}), "ports.imap (plain IMAP) may only be published on a loopback"),
        ("roundcube-authentik:tls", "null", "ports.imaps needs tls"),
        ("roundcube-authentik:app_slug", "Web Mail", "app_slug: must be lower-case"),
        ("roundcube-authentik:authentik_internal_url", "http://authentik:9000", "authentik_internal_url must be https://"),
        ("roundcube-authentik:tls", json.dumps({"cert_file": "certs/x.pem", "key_file": "/k"}), "tls.cert_file: Value error, must be an absolute path"),
        ("roundcube-authentik:authentik_ca_file", "/nonexistent/ca.pem", "authentik_ca_file: Value error, must be a readable PEM file"),
    ],
)
def test_bad_settings_stop_the_program_before_any_resource(key: str, value: str, message: str) -> None:
    config = stack_config("prod")
    config[key] = value
    with pytest.raises(pulumi.RunError) as raised:
        capture("prod", config, placeholders=True)
    text = str(raised.value).replace("Value error, ", "")
    assert message.replace("Value error, ", "") in text
    assert raised.value.declared == []  # type: ignore[attr-defined]


def test_a_missing_setting_is_named() -> None:
    config = stack_config("dev")
    del config["roundcube-authentik:mail_domain"]
    with pytest.raises(pulumi.RunError, match="roundcube-authentik:mail_domain: required, not set"):
        capture("dev", config, placeholders=True)


def test_http_is_allowed_only_in_a_dev_stack() -> None:
    config = stack_config("dev")
    config["roundcube-authentik:dev"] = "false"
    with pytest.raises(pulumi.RunError) as raised:
        capture("dev", config, placeholders=True)
    assert "roundcube_url must be https:// in a stack that is not marked dev: true, got http://localhost:8080" in str(raised.value)
    assert "authentik_url must be https://" in str(raised.value)


def test_text_settings_stay_text_whatever_they_look_like() -> None:
    config = stack_config("dev")
    config["roundcube-authentik:app_name"] = "2026"
    config["roundcube-authentik:allowed_group"] = '{"not": "json"}'
    c = capture("dev", config, placeholders=True)
    assert c.one("authentik:index/application:Application").inputs["name"] == "2026"
    assert [i.args["name"] for i in c.invokes if i.token.endswith("getGroup")] == ['{"not": "json"}']
