"""The renderers, without any daemon: what each file says, and that no
credential can change its structure. tests/daemons runs the real checkers."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from components.render import layout
from components.render.dovecot import render_dovecot_conf, render_introspection_filter_config, render_jwks_sync_config
from components.render.postfix import render_postfix_main_cf, render_postfix_master_cf
from components.render.roundcube import extract_json_document, render_roundcube_config, roundcube_settings
from components.settings import Settings, load_settings
from offline.stack_file import read_stack_text, settings_document

CLIENT_ID = "AbCdEf0123456789AbCdEf0123456789AbCdEf01"
CLIENT_SECRET = "s3cretS3cretS3cretS3cretS3cretS3cretS3cretS3cretS3cretS3cretS3c"
DES_KEY = "0123456789abcdefABCDEFgh"
HOSTILE = [
    'quote" and \'single\' \\ backslash',
    '{"json": "like", "oauth_client_id": "evil"}',
    "line\nbreak\r\nROUNDCUBE_AUTHENTIK_JSON,\n);system('id');//",
    "<?php echo 1; ?> $config['x'] = 1; %{user} $SET:x ${var}",
    "\u00fcnic\u00f6de \u2028 \U0001f600 \x00 nul",
]


@pytest.fixture()
def pem(tmp_path: Path) -> Path:
    path = tmp_path / "some.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    return path


def settings(**fields: Any) -> Settings:
    config = {"mail_domain": "example.com", "dev": True, "roundcube_url": "http://localhost:8080",
              "authentik_url": "http://authentik.example.com:9000", "directory": "open"}
    config.update(fields)
    # Written as a stack file and read as the Pulumi CLI hands it over.
    stack = read_stack_text(settings_document("roundcube-authentik", config), "roundcube-authentik")
    return load_settings(stack.values, stack.project)


def prod_settings(pem: Path, **fields: Any) -> Settings:
    return settings(
        dev=False,
        roundcube_url="https://webmail.example.com",
        authentik_url="https://auth.example.com",
        authentik_ca_file=str(pem),
        tls={"cert_file": str(pem), "key_file": str(pem)},
        relay_host="[smtp.example.net]:587",
        **fields,
    )


# -- Dovecot ---------------------------------------------------------------------------


def dovecot_setting(conf: str, name: str) -> list[str]:
    """Values of `name = value` lines anywhere in the file, unquoted."""
    values = []
    for line in conf.splitlines():
        match = re.match(rf"^\s*{re.escape(name)} =\s?(.*)$", line)
        if match:
            value = match.group(1)
            if value.startswith('"'):
                value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            values.append(value)
    return values


def block(conf: str, opening: str) -> str:
    """The text of a top-level `opening {` ... `}` block."""
    start = conf.index(f"\n{opening} {{\n")
    return conf[start: conf.index("\n}\n", start)]


def test_dovecot_config_version_is_the_first_setting() -> None:
    conf = render_dovecot_conf(settings(), CLIENT_ID, CLIENT_SECRET)
    first = next(line for line in conf.splitlines() if line.strip() and not line.startswith("#"))
    assert first == "dovecot_config_version = 2.4.0"
    assert dovecot_setting(conf, "dovecot_storage_version") == ["2.4.0"]


INTROSPECTION = {"token_validation": "introspection"}


def test_tokens_are_validated_locally_by_default() -> None:
    assert settings().token_validation == "local"
    oauth2 = block(render_dovecot_conf(settings(), CLIENT_ID, CLIENT_SECRET), "oauth2")
    assert dovecot_setting(oauth2, "introspection_mode") == ["local"]
    # Nothing that would call authentik on a login, and no secret in the file.
    for online in ("introspection_url", "tokeninfo_url", "grant_url", "force_introspection", "active_attribute"):
        assert dovecot_setting(oauth2, online) == [], online
    assert CLIENT_SECRET not in render_dovecot_conf(settings(), CLIENT_ID, CLIENT_SECRET)


@pytest.mark.parametrize("unset", ["", None])
def test_an_empty_token_validation_means_the_default(unset: Any) -> None:
    config = {"roundcube-authentik:mail_domain": "example.com", "roundcube-authentik:dev": "true",
              "roundcube-authentik:roundcube_url": "http://localhost:8080",
              "roundcube-authentik:authentik_url": "http://authentik.example.com:9000",
              "roundcube-authentik:directory": "open"}
    if unset is not None:
        config["roundcube-authentik:token_validation"] = unset
        config["roundcube-authentik:jwks_refresh_seconds"] = unset
    loaded = load_settings(config, "roundcube-authentik")
    assert (loaded.token_validation, loaded.jwks_refresh_seconds) == ("local", 60)


def test_token_validation_refuses_other_values() -> None:
    with pytest.raises(ValueError, match="token_validation"):
        settings(token_validation="userinfo")
    with pytest.raises(ValueError, match="jwks_refresh_seconds: must be a number of seconds between 5 and 86400"):
        settings(jwks_refresh_seconds=1)


def test_local_validation_requires_the_providers_issuer_the_client_as_audience_and_the_email_claim() -> None:
    oauth2 = block(render_dovecot_conf(settings(app_slug="mail"), CLIENT_ID, CLIENT_SECRET), "oauth2")
    assert dovecot_setting(oauth2, "issuers") == ["http://authentik.example.com:9000/application/o/mail/"]
    assert dovecot_setting(oauth2, "audience") == [CLIENT_ID]
    assert dovecot_setting(oauth2, "username_attribute") == ["email"]
    assert dovecot_setting(oauth2, "username_validation_format") == ["%{user | lower}"]


def test_local_validation_accepts_exactly_the_public_and_the_internal_issuer() -> None:
    # authentik builds `iss` from the Host of the token request: Roundcube's
    # tokens come through the internal URL, mail clients' through the public one.
    both = settings(authentik_url="https://auth.example.com:443", authentik_internal_url="http://authentik:9000", dev=True)
    assert both.token_issuers == [
        "https://auth.example.com/application/o/webmail/",  # a client leaves :443 out of Host
        "http://authentik:9000/application/o/webmail/",
    ]
    conf = render_dovecot_conf(both, CLIENT_ID, CLIENT_SECRET)
    assert dovecot_setting(block(conf, "oauth2"), "issuers") == [" ".join(both.token_issuers)]


def test_local_validation_reads_keys_from_the_folder_jwks_sync_fills() -> None:
    conf = render_dovecot_conf(settings(), CLIENT_ID, CLIENT_SECRET)
    keys = block(conf, "oauth2_local_validation")
    assert dovecot_setting(keys, "prefix") == [layout.OAUTH2_KEY_DIR + "/"]
    sync = json.loads(render_jwks_sync_config(settings(), CLIENT_ID))
    assert sync["key_dir"] == layout.OAUTH2_KEY_DIR
    assert sync["azp"] == CLIENT_ID  # authentik's access tokens carry the client id as azp


def test_the_jwks_url_is_the_providers_own_over_the_back_channel(pem: Path) -> None:
    public_only = json.loads(render_jwks_sync_config(settings(app_slug="mail", jwks_refresh_seconds=30), CLIENT_ID))
    assert public_only["jwks_url"] == "http://authentik.example.com:9000/application/o/mail/jwks/"
    assert public_only["interval"] == 30
    assert (public_only.get("ca_dir"), public_only.get("ca_file")) == ("/etc/ssl/certs", None)
    internal = prod_settings(pem, authentik_internal_url="https://authentik.internal:9443")
    sync = json.loads(render_jwks_sync_config(internal, CLIENT_ID))
    assert sync["jwks_url"] == "https://authentik.internal:9443/application/o/webmail/jwks/"
    assert (sync.get("ca_file"), sync.get("ca_dir")) == (layout.AUTHENTIK_CA_FILE, None)


def test_introspection_goes_through_the_containers_filter_with_the_credentials() -> None:
    conf = render_dovecot_conf(settings(**INTROSPECTION), CLIENT_ID, CLIENT_SECRET)
    [url] = dovecot_setting(block(conf, "oauth2"), "introspection_url")
    parts = urlsplit(url)
    assert (parts.scheme, parts.hostname, parts.port, parts.path) == (
        "http", "127.0.0.1", layout.INTROSPECTION_FILTER_PORT, "/application/o/introspect/"
    )
    assert (unquote(parts.username), unquote(parts.password)) == (CLIENT_ID, CLIENT_SECRET)
    dovecot_filter = json.loads(render_introspection_filter_config(settings(**INTROSPECTION)))
    assert dovecot_filter["port"] == layout.INTROSPECTION_FILTER_PORT
    assert dovecot_filter["introspection_url"] == "http://authentik.example.com:9000/application/o/introspect/"


def test_introspection_is_posted_forced_and_decided_by_active_with_email_as_user_name() -> None:
    oauth2 = block(render_dovecot_conf(settings(**INTROSPECTION), CLIENT_ID, CLIENT_SECRET), "oauth2")
    assert dovecot_setting(oauth2, "introspection_mode") == ["post"]
    assert dovecot_setting(oauth2, "force_introspection") == ["yes"]
    assert dovecot_setting(oauth2, "active_attribute") == ["active"]
    assert dovecot_setting(oauth2, "active_value") == ["true"]
    assert dovecot_setting(oauth2, "username_attribute") == ["email"]
    # Dovecot lower-cases logins; authentik's email keeps its capitals.
    assert dovecot_setting(oauth2, "username_validation_format") == ["%{user | lower}"]


@pytest.mark.parametrize("mode", ["local", "introspection"])
def test_dovecot_never_asks_authentiks_userinfo_nor_logs_secrets(mode: str) -> None:
    conf = render_dovecot_conf(settings(token_validation=mode), CLIENT_ID, CLIENT_SECRET)
    assert "tokeninfo_url" not in conf  # would make every login fail in 2.4.1 (no `active` in userinfo)
    assert "userinfo" not in conf
    assert "auth_debug" not in conf
    assert dovecot_setting(conf, "auth_mechanisms") == ["xoauth2 oauthbearer"]


@pytest.mark.parametrize("secret", HOSTILE)
def test_a_hostile_client_secret_stays_inside_the_introspection_url(secret: str) -> None:
    plain = render_dovecot_conf(settings(**INTROSPECTION), CLIENT_ID, CLIENT_SECRET)
    hostile = render_dovecot_conf(settings(**INTROSPECTION), CLIENT_ID, secret)
    assert len(hostile.splitlines()) == len(plain.splitlines())
    [url] = dovecot_setting(hostile, "introspection_url")
    assert re.fullmatch(r"[A-Za-z0-9:/.%@_~-]+", url), url  # nothing Dovecot would expand or split
    assert unquote(urlsplit(url).password) == secret


def test_a_client_id_with_a_colon_is_refused() -> None:
    with pytest.raises(ValueError, match="':'"):
        render_dovecot_conf(settings(**INTROSPECTION), "id:with:colons", CLIENT_SECRET)


def test_the_helpers_use_the_system_cas_for_authentik_without_a_ca_file() -> None:
    for rendered in (render_jwks_sync_config(settings(), CLIENT_ID), render_introspection_filter_config(settings())):
        trust = json.loads(rendered)
        assert (trust.get("ca_dir"), trust.get("ca_file")) == ("/etc/ssl/certs", None)


def test_the_helpers_trust_exactly_the_authentik_ca_file_when_set(pem: Path) -> None:
    for rendered in (
        render_jwks_sync_config(prod_settings(pem), CLIENT_ID),
        render_introspection_filter_config(prod_settings(pem, **INTROSPECTION)),
    ):
        trust = json.loads(rendered)
        assert (trust.get("ca_file"), trust.get("ca_dir")) == (layout.AUTHENTIK_CA_FILE, None)


def test_imaps_and_starttls_only_with_tls(pem: Path) -> None:
    plain = render_dovecot_conf(settings(), CLIENT_ID, CLIENT_SECRET)
    assert dovecot_setting(plain, "ssl") == ["no"]
    assert "ssl_server_cert_file" not in plain
    imaps = plain[plain.index("inet_listener imaps"):]
    assert dovecot_setting(imaps[: imaps.index("}")], "port") == ["0"]

    tls = render_dovecot_conf(prod_settings(pem), CLIENT_ID, CLIENT_SECRET)
    assert dovecot_setting(tls, "ssl")[0] == "yes"
    assert dovecot_setting(tls, "ssl_server_cert_file") == [layout.TLS_CERT_FILE]
    assert dovecot_setting(tls, "ssl_server_key_file") == [layout.TLS_KEY_FILE]
    imaps = tls[tls.index("inet_listener imaps"):]
    assert dovecot_setting(imaps[: imaps.index("}")], "port") == [str(layout.IMAPS_PORT)]


def test_dovecot_listens_where_the_layout_says_and_delivers_to_vmail_maildirs() -> None:
    conf = render_dovecot_conf(settings(), CLIENT_ID, CLIENT_SECRET)
    for listener, port in (("imap", layout.IMAP_PORT), ("lmtp", layout.LMTP_PORT)):
        section = conf[conf.index(f"inet_listener {listener} {{"):]
        assert dovecot_setting(section[: section.index("}")], "port") == [str(port)]
    # Postfix's SASL: a UNIX socket only (a closed one fails Postfix's next write, and it reconnects).
    assert dovecot_setting(block(conf, "service auth"), "path") == [layout.SASL_SOCKET]
    assert "inet_listener auth" not in conf
    assert dovecot_setting(conf, "protocols") == ["imap lmtp"]
    userdb = block(conf, "userdb static")
    # The userdb asks the passdbs whether a user exists: only mail_domain's do.
    assert dovecot_setting(userdb, "allow_all_users") == ["no"]
    assert dovecot_setting(userdb, "uid") == [str(layout.VMAIL_UID)]
    assert dovecot_setting(userdb, "home") == [f"{layout.MAIL_DIR}/%{{user | domain}}/%{{user | username}}"]
    assert dovecot_setting(conf, "mail_driver") == ["maildir"]


def test_dovecot_binds_every_login_and_recipient_to_the_mail_domain() -> None:
    conf = render_dovecot_conf(settings(), CLIENT_ID, CLIENT_SECRET)
    domain = settings().mail_domain
    deny = block(conf, "passdb outside_mail_domain")
    assert dovecot_setting(deny, "deny") == ["yes"]
    assert dovecot_setting(deny, "username_filter") == [f"!*@{domain}"]
    assert dovecot_setting(block(conf, "passdb second_at_sign"), "deny") == ["yes"]
    inside = block(conf, "passdb mail_domain")
    assert dovecot_setting(inside, "username_filter") == [f"*@{domain}"]
    # The deny passdbs come first: Dovecot stops at the first that finds the user.
    assert conf.index("passdb outside_mail_domain") < conf.index("passdb mail_domain")


def test_dovecot_enforces_the_mailbox_quota_with_a_permanent_refusal_at_lmtp() -> None:
    conf = render_dovecot_conf(settings(mailbox_quota="750M"), CLIENT_ID, CLIENT_SECRET)
    # Outside the quota block: only there does the directory's per-user quota override it.
    assert "quota mailbox {" in conf and dovecot_setting(conf, "quota_storage_size") == ["750M"]
    assert dovecot_setting(conf, "quota_full_tempfail") == ["no"]
    assert dovecot_setting(conf, "lmtp_rcpt_check_quota") == ["yes"]
    assert dovecot_setting(render_dovecot_conf(settings(), CLIENT_ID, CLIENT_SECRET), "quota_storage_size") == ["5G"]


# -- Postfix ---------------------------------------------------------------------------


def main_cf(text: str) -> dict[str, str]:
    entries: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            assert name.strip() not in entries, f"{name.strip()} set twice"
            entries[name.strip()] = value.strip()
    return entries


def master_cf(text: str) -> dict[tuple[str, str], dict[str, Any]]:
    services: dict[tuple[str, str], dict[str, Any]] = {}
    current: dict[str, Any] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line[0].isspace():
            flag, _, setting = line.strip().partition(" ")
            if flag != "-o":  # more of the command's arguments (e.g. spawn's user= argv=)
                current["command"] += line.split()
                continue
            name, _, value = setting.partition("=")
            current["options"][name] = value
            continue
        name, kind, private, unpriv, chroot, wakeup, maxproc, *command = line.split()
        current = {"chroot": chroot, "command": command, "options": {}}
        assert (name, kind) not in services, line
        services[(name, kind)] = current
    return services


def test_postfix_delivers_the_mail_domain_to_dovecot_over_lmtp_and_nothing_locally() -> None:
    main = main_cf(render_postfix_main_cf(settings(mail_hostname="mx.example.com")))
    assert main["myhostname"] == "mx.example.com"
    assert main["mydestination"] == ""
    assert main["virtual_mailbox_domains"] == "example.com"
    assert main["virtual_transport"] == f"lmtp:inet:{layout.DOVECOT_HOST}:{layout.LMTP_PORT}"
    assert main["mynetworks"] == "127.0.0.0/8"
    assert main["relayhost"] == ""
    assert main["maillog_file"] == "/dev/stdout"
    assert tuple(map(int, main["compatibility_level"].split("."))) >= (3, 6)


def test_postfix_relays_through_the_relay_host_when_set(pem: Path) -> None:
    assert main_cf(render_postfix_main_cf(prod_settings(pem)))["relayhost"] == "[smtp.example.net]:587"


def test_postfix_authenticates_through_dovecot_with_mechanisms_it_can_offer() -> None:
    main = main_cf(render_postfix_main_cf(settings()))
    assert main["smtpd_sasl_type"] == "dovecot"
    assert main["smtpd_sasl_path"] == layout.SASL_SOCKET
    # noplaintext would leave no mechanism (Dovecot's XOAUTH2 counts as plaintext): smtpd dies.
    assert main["smtpd_sasl_security_options"] == "noanonymous"
    assert main["smtpd_sasl_tls_security_options"] == "noanonymous"
    assert int(main["line_length_limit"]) >= 8192  # ~1800-character JWTs inline on the AUTH line
    assert main["smtpd_relay_restrictions"] == "permit_sasl_authenticated, reject_unauth_destination"
    # That each login owns exactly its own address is checked on the real
    # daemons, not as this file's text: tests/e2e test_a_user_cannot_send_as_another
    # and the foreign-domain refusals.


def test_postfix_submission_requires_tls_for_auth_when_tls_is_set(pem: Path) -> None:
    main = main_cf(render_postfix_main_cf(prod_settings(pem)))
    assert main["smtpd_tls_cert_file"] == layout.TLS_CERT_FILE
    assert main["smtpd_tls_key_file"] == layout.TLS_KEY_FILE
    services = master_cf(render_postfix_master_cf(prod_settings(pem)))
    submission = services[(str(layout.SUBMISSION_PORT), "inet")]["options"]
    assert submission["smtpd_tls_security_level"] == "encrypt"
    assert submission["smtpd_tls_auth_only"] == "yes"
    assert submission["smtpd_sasl_auth_enable"] == "yes"
    assert services[(str(layout.SMTP_PORT), "inet")]["options"]["smtpd_tls_security_level"] == "may"


def test_postfix_without_tls_names_no_certificate() -> None:
    main = main_cf(render_postfix_main_cf(settings()))
    assert "smtpd_tls_cert_file" not in main
    services = master_cf(render_postfix_master_cf(settings()))
    assert "smtpd_tls_security_level" not in services[(str(layout.SUBMISSION_PORT), "inet")]["options"]
    assert "smtpd_tls_security_level" not in services[(str(layout.SMTP_PORT), "inet")]["options"]


@pytest.mark.parametrize("port", [layout.SUBMISSION_PORT, layout.WEBMAIL_SUBMISSION_PORT])
def test_submission_ports_take_only_authenticated_senders_using_their_own_address(port: int) -> None:
    options = master_cf(render_postfix_master_cf(settings()))[(str(port), "inet")]["options"]
    assert options["smtpd_sasl_auth_enable"] == "yes"
    assert options["smtpd_sender_restrictions"] == "reject_sender_login_mismatch"
    assert options["smtpd_relay_restrictions"] == "permit_sasl_authenticated,reject"
    assert options["smtpd_client_restrictions"] == "permit_sasl_authenticated,reject"


def test_with_a_certificate_no_login_is_in_clear_roundcubes_included(pem: Path) -> None:
    options = master_cf(render_postfix_master_cf(prod_settings(pem)))[(str(layout.WEBMAIL_SUBMISSION_PORT), "inet")]
    assert options["options"]["smtpd_tls_security_level"] == "encrypt"
    assert options["options"]["smtpd_tls_auth_only"] == "yes"
    assert dovecot_setting(render_dovecot_conf(prod_settings(pem), CLIENT_ID, CLIENT_SECRET), "auth_allow_cleartext") == ["no"]
    config = extract_json_document(render_roundcube_config(prod_settings(pem), CLIENT_ID, CLIENT_SECRET, DES_KEY))
    assert config["imap_host"] == f"tls://{layout.DOVECOT_HOST}:{layout.IMAP_PORT}"
    assert config["smtp_host"] == f"tls://{layout.POSTFIX_HOST}:{layout.WEBMAIL_SUBMISSION_PORT}"
    # The containers' names are not the certificate's: the name checked is mail_hostname's.
    for options_key in ("imap_conn_options", "smtp_conn_options"):
        assert config[options_key]["ssl"] == {"peer_name": "mail.example.com", "verify_peer": True, "verify_peer_name": True}
    # Without a certificate (dev), the private network carries tokens in clear, as before.
    dev = master_cf(render_postfix_master_cf(settings()))[(str(layout.WEBMAIL_SUBMISSION_PORT), "inet")]
    assert dev["options"]["smtpd_tls_security_level"] == "none"
    assert dovecot_setting(render_dovecot_conf(settings(), CLIENT_ID, CLIENT_SECRET), "auth_allow_cleartext") == ["yes"]


def test_inbound_smtp_has_no_auth() -> None:
    options = master_cf(render_postfix_master_cf(settings()))[(str(layout.SMTP_PORT), "inet")]["options"]
    assert "smtpd_sasl_auth_enable" not in options
    assert main_cf(render_postfix_main_cf(settings()))["smtpd_sasl_auth_enable"] == "no"


def test_master_cf_is_complete_and_chroots_nothing(pem: Path) -> None:
    for stack in (settings(), prod_settings(pem)):
        services = master_cf(render_postfix_master_cf(stack))
        assert {service["chroot"] for service in services.values()} == {"n"}
        names = {name for name, _ in services}
        assert {
            "pickup", "cleanup", "qmgr", "tlsmgr", "rewrite", "bounce", "defer", "trace", "verify", "flush",
            "proxymap", "proxywrite", "smtp", "relay", "showq", "error", "retry", "discard", "local", "virtual",
            "lmtp", "anvil", "scache", "postlog",
        } <= names
        assert services[("postlog", "unix-dgram")]["command"] == ["postlogd"]  # maillog_file needs it


# -- Roundcube -------------------------------------------------------------------------


def test_roundcube_config_holds_the_same_credentials() -> None:
    config = extract_json_document(render_roundcube_config(settings(), CLIENT_ID, CLIENT_SECRET, DES_KEY))
    assert (config["oauth_client_id"], config["oauth_client_secret"], config["des_key"]) == (
        CLIENT_ID, CLIENT_SECRET, DES_KEY
    )


def test_roundcube_talks_to_authentik_dovecot_and_postfix_where_they_are() -> None:
    config = extract_json_document(render_roundcube_config(settings(), CLIENT_ID, CLIENT_SECRET, DES_KEY))
    base = "http://authentik.example.com:9000/application/o"
    assert config["oauth_auth_uri"] == f"{base}/authorize/"
    assert config["oauth_token_uri"] == f"{base}/token/"
    assert config["oauth_identity_uri"] == f"{base}/userinfo/"
    assert config["oauth_provider"] == "generic"
    assert config["oauth_provider_name"] == "authentik"
    # openid: an id_token and introspection; email: the mailbox; offline_access: a refresh token.
    assert {"openid", "email", "offline_access"} <= set(config["oauth_scope"].split())
    assert config["oauth_identity_fields"] == ["email"]
    assert config["oauth_login_redirect"] is False
    assert config["imap_host"] == f"{layout.DOVECOT_HOST}:{layout.IMAP_PORT}"
    assert config["smtp_host"] == f"{layout.POSTFIX_HOST}:{layout.WEBMAIL_SUBMISSION_PORT}"
    assert config["db_dsnw"] == f"sqlite:///{layout.ROUNDCUBE_DB_FILE}?mode=0640"
    assert config["log_driver"] == "stdout"
    assert config["product_name"] == "Webmail"


def test_roundcube_builds_https_redirect_uris_behind_a_tls_proxy_and_trusts_the_authentik_ca(pem: Path) -> None:
    dev = extract_json_document(render_roundcube_config(settings(), CLIENT_ID, CLIENT_SECRET, DES_KEY))
    assert dev["use_https"] is False
    assert dev["oauth_verify_peer"] is True
    prod = extract_json_document(render_roundcube_config(prod_settings(pem), CLIENT_ID, CLIENT_SECRET, DES_KEY))
    assert prod["use_https"] is True
    assert prod["oauth_verify_peer"] == layout.AUTHENTIK_CA_FILE
    assert prod["oauth_auth_uri"] == "https://auth.example.com/application/o/authorize/"
    assert prod_settings(pem).redirect_uri == "https://webmail.example.com/index.php/login/oauth"


@pytest.mark.parametrize("hostile", HOSTILE)
def test_a_hostile_credential_cannot_break_out_of_the_php_file(hostile: str) -> None:
    rendered = render_roundcube_config(settings(app_name=hostile), hostile, hostile, hostile)
    config = extract_json_document(rendered)
    assert (config["oauth_client_id"], config["oauth_client_secret"], config["des_key"], config["product_name"]) == (
        hostile, hostile, hostile, hostile
    )
    # The PHP around the JSON document is the same whatever the credentials.
    plain = render_roundcube_config(settings(), CLIENT_ID, CLIENT_SECRET, DES_KEY)
    assert _php_frame(rendered) == _php_frame(plain)
    # No line of the document ends the nowdoc early (PHP ends it at a line starting with the marker).
    lines = rendered.split("\n")
    opening = next(i for i, line in enumerate(lines) if line.endswith("<<<'ROUNDCUBE_AUTHENTIK_JSON'"))
    closing = lines.index("ROUNDCUBE_AUTHENTIK_JSON,")
    assert lines[opening + 1] == "{" and lines[closing - 1] == "}"
    body = lines[opening + 1 : closing]
    assert not [line for line in body if line.lstrip().startswith("ROUNDCUBE_AUTHENTIK_JSON")]
    assert all(ord(char) < 128 for char in rendered)


def _php_frame(rendered: str) -> str:
    start = rendered.index("\n{\n")
    end = rendered.index("\n}\nROUNDCUBE_AUTHENTIK_JSON,")
    return rendered[:start] + rendered[end:]


@pytest.mark.parametrize("validity, interval", [("minutes=10", 60), ("hours=1", 60), ("minutes=2", 40), ("seconds=20", 6)])
def test_roundcube_keeps_alive_and_refreshes_within_the_access_token_lifetime(validity: str, interval: int) -> None:
    config = roundcube_settings(settings(access_token_validity=validity), CLIENT_ID, CLIENT_SECRET, DES_KEY)
    assert config["refresh_interval"] == interval
    # Roundcube's own rule (rcmail_oauth::mask_auth_data): the token must outlive the interval.
    from components.settings import validity_seconds

    assert config["refresh_interval"] < validity_seconds(validity)
    assert "refresh_interval" in config["dont_override"]
