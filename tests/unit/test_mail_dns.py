"""DKIM signing, the DNS records a domain needs and the inbound checks, under Pulumi's mocks.

The real `__main__.py` runs for the example stacks (offline.capture); the DKIM
key comes from the mocks as pulumi-tls would make it (a real RSA 2048 key
with placeholders=False).
"""

from __future__ import annotations

import base64
import json
from typing import Any, Callable, Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from components.render import layout
from offline.capture import Capture, capture, capture_stack, read_stack, string_leaves
from offline.stack_file import StackConfig

KEY = "tls:index/privateKey:PrivateKey"
CONTAINER = "docker:index/container:Container"
NS = "roundcube-authentik"


def run(stack: str, change: Callable[[StackConfig], StackConfig] | None = None, placeholders: bool = False) -> Capture:
    config = read_stack(stack)
    if change:
        config = change(config)
    return capture(stack, config, placeholders=placeholders)


@pytest.fixture(scope="module", params=("dev", "prod"))
def declared(request: pytest.FixtureRequest) -> Capture:
    return capture_stack(request.param, placeholders=False)


def opendkim(c: Capture) -> Any:
    return c.one(CONTAINER, "-opendkim")


def uploads(c: Capture, service: str) -> dict[str, dict[str, Any]]:
    return c.uploads(service)


def records(c: Capture, type_: str, name: str) -> list[str]:
    return [r["value"] for r in c.exports["dns_records"] if r["type"] == type_ and r["name"] == name]




def private_key_pem(c: Capture, selector: str = "s202612") -> str:
    return c.one(KEY, f"dkim-{selector}").outputs["privateKeyPem"]


def private_lines(c: Capture, selector: str = "s202612") -> list[str]:
    """The PEM lines of the private key that are not also in the public key.

    The private key carries the modulus too, so a line can by chance be in
    the public key's base64; every other line holds private material.
    """
    key = c.one(KEY, f"dkim-{selector}").outputs
    public = "".join(key["publicKeyPem"].splitlines()[1:-1])
    lines = [line for line in key["privateKeyPem"].splitlines() if not line.startswith("-----")]
    secret = [line for line in lines if line not in public]
    assert len(secret) > len(lines) // 2
    return secret


def secret_strings(c: Capture) -> list[str]:
    """Every generated secret of the stack: OAuth credentials, DES key, DKIM private key (its base64 lines)."""
    provider = c.one("authentik:index/providerOauth2:ProviderOauth2").inputs
    return [provider["clientId"], provider["clientSecret"], *private_lines(c)]


# -- the key ---------------------------------------------------------------------


def test_dkim_key_is_rsa_2048_from_pulumi_tls_and_signs_with_the_default_dated_selector(declared: Capture) -> None:
    key = declared.one(KEY)
    assert key.name == "dkim-s202612" and key.parent_name == "dkim"
    assert key.inputs == {"algorithm": "RSA", "rsaBits": 2048}
    loaded = serialization.load_pem_private_key(private_key_pem(declared).encode(), None)
    assert isinstance(loaded, rsa.RSAPrivateKey) and loaded.key_size == 2048
    conf = uploads(declared, "opendkim")[layout.OPENDKIM_CONF]["content"]
    assert "Selector s202612\n" in conf and f"KeyFile {layout.dkim_key_file('s202612')}\n" in conf


def test_dkim_private_key_is_uploaded_to_opendkim_only_as_a_secret_file_readable_by_opendkim_alone(
    declared: Capture,
) -> None:
    pem = private_key_pem(declared)
    container = declared.config_carrier("opendkim")
    key_file = uploads(declared, "opendkim")[layout.dkim_key_file("s202612")]
    assert key_file["content"] == pem
    assert (key_file["permissions"], key_file["owner"], key_file["group"]) == (
        "0600", str(layout.OPENDKIM_UID), str(layout.OPENDKIM_GID)
    )
    assert "uploads" in container.secret_paths
    assert not container.inputs.get("envs") and not container.inputs.get("command")


def test_dkim_private_key_is_secret_everywhere(declared: Capture) -> None:
    key = declared.one(KEY)
    # The mocks keep the provider's secret marking of the private forms.
    body = private_lines(declared)
    for resource in declared.resources:
        for path, value in string_leaves(resource.inputs):
            if any(line in value for line in body):
                assert resource is declared.config_carrier("opendkim") and path.startswith("uploads."), f"{resource.name}.{path}"
                assert any(path == p or path.startswith(p + ".") for p in resource.secret_paths), path
    for name, value in declared.exports.items():
        assert not any(line in json.dumps(value) for line in body) or name in declared.secret_exports, name
    assert "PRIVATE KEY" not in json.dumps(declared.exports)
    assert key.outputs["privateKeyPem"].startswith("-----BEGIN RSA PRIVATE KEY-----")


def test_placeholders_give_a_stable_key_that_stays_secret() -> None:
    first, second = run("dev", placeholders=True), run("dev", placeholders=True)
    assert first.exports["dns_records"] == second.exports["dns_records"]
    key_file = uploads(first, "opendkim")[layout.dkim_key_file("s202612")]
    assert key_file["content"].startswith("__SECRET_") and "uploads" in first.config_carrier("opendkim").secret_paths


# -- dns_records -------------------------------------------------------------------


def test_dns_records_is_a_plain_output_of_public_values_only(declared: Capture) -> None:
    assert "dns_records" not in declared.secret_exports
    text = json.dumps(declared.exports["dns_records"])
    for secret in secret_strings(declared):
        assert secret not in text
    assert "__SECRET_" not in text and "PRIVATE" not in text
    for record in declared.exports["dns_records"]:
        assert set(record) == {"type", "name", "value"} and all(isinstance(v, str) and v for v in record.values())


def test_dkim_record_holds_the_public_half_of_the_signing_key(declared: Capture) -> None:
    domain = "example.test" if declared.stack == "dev" else "example.com"
    [value] = records(declared, "TXT", f"s202612._domainkey.{domain}")
    assert value.startswith("v=DKIM1; k=rsa; p=")
    der = base64.b64decode(value.split("p=", 1)[1])
    private = serialization.load_pem_private_key(private_key_pem(declared).encode(), None)
    assert der == private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_mx_spf_dmarc_and_ptr_name_the_mail_host(declared: Capture) -> None:
    domain, host = ("example.test", "mail.example.test") if declared.stack == "dev" else ("example.com", "mail.example.com")
    assert records(declared, "MX", domain) == [f"10 {host}"]
    assert records(declared, "TXT", domain) == ["v=spf1 mx -all"]
    assert records(declared, "TXT", host) == ["v=spf1 a -all"]
    assert records(declared, "TXT", f"_dmarc.{domain}") == ["v=DMARC1; p=quarantine"]
    [ptr] = [r for r in declared.exports["dns_records"] if r["type"] == "PTR"]
    assert ptr["value"] == host and ptr["name"].endswith(".in-addr.arpa")


def test_mta_sts_and_tls_rpt_only_with_tls_and_a_report_address() -> None:
    dev = run("dev")
    assert not [r for r in dev.exports["dns_records"] if r["name"].startswith(("_mta-sts.", "_smtp._tls."))]
    assert "mta_sts_policy" not in dev.exports

    def reports(config: StackConfig) -> StackConfig:
        return config.with_values(report_address="postmaster@example.com", dmarc_policy="reject")

    prod = run("prod", reports)
    [sts] = records(prod, "TXT", "_mta-sts.example.com")
    assert sts.startswith("v=STSv1; id=")
    assert records(prod, "TXT", "_smtp._tls.example.com") == ["v=TLSRPTv1; rua=mailto:postmaster@example.com"]
    assert records(prod, "TXT", "_dmarc.example.com") == ["v=DMARC1; p=reject; rua=mailto:postmaster@example.com"]
    policy = prod.exports["mta_sts_policy"]
    assert policy["url"] == "https://mta-sts.example.com/.well-known/mta-sts.txt"
    assert "mx: mail.example.com\n" in policy["content"] and "mode: testing\n" in policy["content"]
    # The id follows the policy: another mode, another id.
    enforced = run("prod", lambda c: c.with_values(mta_sts_mode="enforce"))
    assert records(enforced, "TXT", "_mta-sts.example.com") != [sts]


def test_spf_includes_the_relay_host_when_mail_leaves_through_it() -> None:
    relayed = run("prod", lambda c: c.with_values(relay_host="[smtp.relay.example.net]:587"))
    assert records(relayed, "TXT", "example.com") == ["v=spf1 mx include:smtp.relay.example.net -all"]
    chosen = run(
        "prod",
        lambda c: c.with_values(relay_host="[smtp.relay.example.net]:587", relay_spf_include="spf.relay.example.net"),
    )
    assert records(chosen, "TXT", "example.com") == ["v=spf1 mx include:spf.relay.example.net -all"]


def test_ptr_and_a_name_the_address_when_publish_address_is_public() -> None:
    # Only text in the output: no traffic goes anywhere.
    public = run("prod", lambda c: c.with_values(publish_address="5.6.7.8"))
    assert records(public, "A", "mail.example.com") == ["5.6.7.8"]
    assert records(public, "PTR", "8.7.6.5.in-addr.arpa") == ["mail.example.com"]


# -- rotation -----------------------------------------------------------------------


def test_rotation_keeps_the_old_key_and_publishes_both_records_while_the_new_one_signs() -> None:
    before = run("prod")
    old = private_key_pem(before)

    def rotate(config: StackConfig) -> StackConfig:
        return config.with_values(dkim_selector="s202706", dkim_extra_selectors=json.dumps(["s202612"]))

    during = run("prod", rotate)
    assert {k.name for k in during.of_type(KEY)} == {"dkim-s202612", "dkim-s202706"}
    assert len(records(during, "TXT", "s202612._domainkey.example.com")) == 1
    assert len(records(during, "TXT", "s202706._domainkey.example.com")) == 1
    files = uploads(during, "opendkim")
    assert "Selector s202706\n" in files[layout.OPENDKIM_CONF]["content"]
    assert files[layout.dkim_key_file("s202706")]["content"] == private_key_pem(during, "s202706")
    assert layout.dkim_key_file("s202612") not in files, "only the signing key goes to the signer"
    # The same resource name keeps the same key in a real state; under mocks each run is a fresh state.
    assert old != private_key_pem(during, "s202706")


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("dkim_selector", "Bad_Selector", "dkim_selector: must be one DNS label"),
        ("dkim_extra_selectors", json.dumps(["s202612"]), "dkim_extra_selectors repeats dkim_selector"),
        ("dmarc_policy", "strict", "dmarc_policy: must be none, quarantine or reject"),
        ("report_address", "not-an-address", "report_address: must be an email address"),
        ("dnsbl_sites", json.dumps(["zen spamhaus"]), "dnsbl_sites: each must be a DNSBL zone"),
        ("relay_spf_include", "spf.example.net", "relay_spf_include needs relay_host"),
        ("mta_sts_mode", "on", "mta_sts_mode: must be testing or enforce"),
    ],
)
def test_bad_mail_settings_stop_the_program_before_any_resource(key: str, value: str, message: str) -> None:
    with pytest.raises(Exception) as raised:
        run("dev", lambda c: c.with_values(**{key: value}))
    assert message in str(raised.value)
    assert getattr(raised.value, "declared", None) == []


def test_empty_mail_settings_mean_the_defaults() -> None:
    def empty(config: StackConfig) -> StackConfig:
        keys = ("dkim_selector", "dkim_extra_selectors", "dmarc_policy", "report_address", "dnsbl_sites", "mta_sts_mode")
        return config.with_values(**{key: "" for key in keys})

    c = run("dev", empty)
    assert {k.name for k in c.of_type(KEY)} == {"dkim-s202612"}
    assert records(c, "TXT", "_dmarc.example.test") == ["v=DMARC1; p=quarantine"]
    assert "postscreen_dnsbl_sites =\n" in uploads(c, "postfix")[layout.POSTFIX_MAIN_CF]["content"]


# -- inbound checks -------------------------------------------------------------------


def test_opendkim_runs_in_its_own_container_with_a_healthcheck_and_postfix_uses_it(declared: Capture) -> None:
    container = opendkim(declared).inputs
    assert container["healthcheck"]["tests"] == ["CMD", "/usr/local/bin/healthcheck"]
    assert container.get("ports", []) == [] and container["restart"] == "unless-stopped"
    main = uploads(declared, "postfix")[layout.POSTFIX_MAIN_CF]["content"]
    assert f"smtpd_milters = inet:{layout.OPENDKIM_HOST}:{layout.MILTER_PORT}\n" in main
    assert "milter_default_action = tempfail\n" in main
    assert layout.POLICYD_SPF_CONF in uploads(declared, "postfix")


def test_dnsbl_is_off_by_default_and_a_setting_turns_it_on() -> None:
    assert "postscreen_dnsbl_sites =\n" in uploads(run("prod"), "postfix")[layout.POSTFIX_MAIN_CF]["content"]
    on = run("prod", lambda c: c.with_values(dnsbl_sites=json.dumps(["zen.spamhaus.org*2", "bl.spamcop.net"])))
    main = uploads(on, "postfix")[layout.POSTFIX_MAIN_CF]["content"]
    assert "postscreen_dnsbl_sites = zen.spamhaus.org*2, bl.spamcop.net\n" in main
    assert "postscreen_dnsbl_action = enforce\n" in main
