"""Each daemon's own checker accepts what the renderers produce, without a warning."""

from __future__ import annotations

import json

from components.render import layout
from components.render.balancer import render_balancer_cfg
from dataclasses import replace

from daemon_harness import Pki, Resources, Upload, Variant, make_variant, run_once

# Prints what Roundcube really loaded: its bootstrap, its config class.
ROUNDCUBE_DUMP = """<?php
define('INSTALL_PATH', '/var/lib/roundcube/');
require INSTALL_PATH . 'program/include/iniset.php';
$rcube = rcube::get_instance();
$keys = json_decode($argv[1], true, 512, JSON_THROW_ON_ERROR);
$loaded = [];
foreach ($keys as $key) {
    $loaded[$key] = $rcube->config->get($key);
}
echo json_encode($loaded, JSON_THROW_ON_ERROR), "\\n";
"""
DUMP_SCRIPT = "/tmp/dump-config.php"


def test_doveconf_accepts_the_rendered_config_without_warnings(
    resources: Resources, images: dict[str, str], variant: Variant
) -> None:
    run = run_once(
        resources, images["dovecot"], ["doveconf", "-n"], variant.dovecot_files(), volumes=variant.tls_binds()
    )
    assert run.exit_code == 0, str(run)
    assert run.stderr.strip() == "", str(run)
    assert "introspection_mode = post" in run.stdout


def test_doveconf_reads_the_credentials_back_from_the_introspection_url(
    resources: Resources, images: dict[str, str], variant: Variant
) -> None:
    run = run_once(
        resources, images["dovecot"], ["doveconf", "-P", "oauth2"], variant.dovecot_files(), volumes=variant.tls_binds()
    )
    assert run.exit_code == 0, str(run)
    # The container's filter on the loopback, which passes the request on to authentik.
    url = f"{variant.client_id}:{variant.client_secret}@127.0.0.1:{layout.INTROSPECTION_FILTER_PORT}"
    assert url + "/application/o/introspect/" in run.stdout, run.stdout


def test_doveconf_accepts_the_rendered_local_validation_config_without_warnings(
    resources: Resources, images: dict[str, str], variant: Variant
) -> None:
    local = variant.settings.model_copy(update={"token_validation": "local"})
    run = run_once(
        resources, images["dovecot"], ["doveconf", "-n"], variant.dovecot_files(local), volumes=variant.tls_binds()
    )
    assert run.exit_code == 0, str(run)
    assert run.stderr.strip() == "", str(run)
    assert "introspection_mode = local" in run.stdout
    assert f"audience = {variant.client_id}" in run.stdout
    assert f"issuers = {variant.settings.authentik_url}/application/o/webmail/" in run.stdout
    assert f"prefix = {layout.OAUTH2_KEY_DIR}/" in run.stdout
    assert variant.client_secret not in run.stdout


def test_postconf_and_postfix_check_accept_the_rendered_config(
    resources: Resources, images: dict[str, str], variant: Variant
) -> None:
    files = variant.postfix_files()
    binds = variant.tls_binds()
    postconf = run_once(resources, images["postfix"], ["postconf", "-n"], files, volumes=binds)
    assert postconf.exit_code == 0, str(postconf)
    assert postconf.stderr.strip() == "", str(postconf)  # e.g. "unused parameter", "overriding earlier entry"
    assert f"myhostname = {variant.settings.host_name}" in postconf.stdout

    master = run_once(resources, images["postfix"], ["postconf", "-M"], files, volumes=binds)
    assert master.exit_code == 0 and master.stderr.strip() == "", str(master)
    assert " y " not in master.stdout.replace("\t", " "), "nothing may be chrooted:\n" + master.stdout

    check = run_once(resources, images["postfix"], ["postfix", "check"], files, volumes=binds)
    assert check.exit_code == 0, str(check)
    assert "warning" not in check.stderr.lower() and "fatal" not in check.stderr.lower(), str(check)


def test_php_parses_the_config_and_roundcube_loads_what_was_rendered(
    resources: Resources, images: dict[str, str], variant: Variant
) -> None:
    files = {**variant.roundcube_files(), DUMP_SCRIPT: Upload(ROUNDCUBE_DUMP.encode())}
    lint = run_once(resources, images["roundcube"], ["php", "-l", layout.ROUNDCUBE_CONFIG], files)
    assert lint.exit_code == 0, str(lint)
    assert "No syntax errors" in lint.stdout

    expected = {
        "oauth_client_id": variant.client_id,
        "oauth_client_secret": variant.client_secret,
        "des_key": variant.des_key,
        # With tls, STARTTLS on the private network too.
        "imap_host": f"{'tls://' if variant.settings.tls else ''}{layout.DOVECOT_HOST}:{layout.IMAP_PORT}",
        "smtp_host": f"{'tls://' if variant.settings.tls else ''}{layout.POSTFIX_HOST}:{layout.WEBMAIL_SUBMISSION_PORT}",
        "db_dsnw": f"sqlite:///{layout.ROUNDCUBE_DB_FILE}?mode=0640",
        "product_name": variant.settings.app_name,
        "oauth_verify_peer": layout.AUTHENTIK_CA_FILE if variant.settings.authentik_ca_file else True,
        "use_https": variant.settings.roundcube_url.startswith("https://"),
        "oauth_auth_uri": f"{variant.settings.authentik_url}/application/o/authorize/",
    }
    # As www-data, the user Apache runs Roundcube as: the config must be readable to it.
    dump = run_once(
        resources, images["roundcube"], ["php", DUMP_SCRIPT, json.dumps(list(expected))], files, user="www-data"
    )
    assert dump.exit_code == 0, str(dump)
    assert dump.stderr.strip() == "", str(dump)
    assert json.loads(dump.stdout) == expected


def test_roundcube_loads_hostile_credentials_unchanged(resources: Resources, images: dict[str, str], pki: Pki) -> None:
    """Quotes, backslashes, the nowdoc marker, PHP and JSON text: all stay data."""
    hostile = "q\"uo'te \\ {\"json\": 1}\nROUNDCUBE_AUTHENTIK_JSON,\n<?php ?> $config %{user} \u00fc"
    variant = replace(make_variant("dev", pki, app_name=hostile), client_id=hostile, client_secret=hostile[::-1],
                      des_key=hostile)
    files = {**variant.roundcube_files(), DUMP_SCRIPT: Upload(ROUNDCUBE_DUMP.encode())}
    keys = ["oauth_client_id", "oauth_client_secret", "des_key", "product_name"]
    dump = run_once(resources, images["roundcube"], ["php", DUMP_SCRIPT, json.dumps(keys)], files, user="www-data")
    assert dump.exit_code == 0 and dump.stderr.strip() == "", str(dump)
    assert json.loads(dump.stdout) == dict(zip(keys, [hostile, hostile[::-1], hostile, hostile]))


def test_opendkim_accepts_the_rendered_config_and_loads_the_uploaded_key(
    resources: Resources, images: dict[str, str], variant: Variant
) -> None:
    files = variant.opendkim_files()
    check = run_once(resources, images["opendkim"], ["opendkim", "-n", "-x", layout.OPENDKIM_CONF], files)
    assert check.exit_code == 0, str(check)
    assert check.stdout.strip() == "" and check.stderr.strip() == "", str(check)
    # The check really reads the key: a key others may read is refused (RequireSafeKeys).
    key_path = layout.dkim_key_file(variant.settings.dkim_selector)
    unsafe = {**files, key_path: replace(files[key_path], mode=0o644)}
    refused = run_once(resources, images["opendkim"], ["opendkim", "-n", "-x", layout.OPENDKIM_CONF], unsafe)
    assert refused.exit_code != 0, str(refused)


def test_policyd_spf_runs_with_the_rendered_config(resources: Resources, images: dict[str, str], variant: Variant) -> None:
    # A request from a skipped address: answered from the config alone, no DNS query.
    request = "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=127.0.0.1\n" \
              "helo_name=client.test\nsender=someone@sender.test\nrecipient=alice@example.com\n\n"
    run = run_once(
        resources,
        images["postfix"],
        ["sh", "-c", f"printf '%s' \"$0\" | policyd-spf {layout.POLICYD_SPF_CONF}", request],
        variant.postfix_files(),
    )
    assert run.exit_code == 0, str(run)
    assert run.stdout.startswith("action="), str(run)
    assert "error" not in (run.stdout + run.stderr).lower(), str(run)


def test_haproxy_accepts_the_rendered_balancer_config(resources: Resources, images: dict[str, str]) -> None:
    files = {layout.BALANCER_CONFIG: Upload(render_balancer_cfg().encode())}
    check = run_once(resources, images["balancer"], ["haproxy", "-c", "-f", layout.BALANCER_CONFIG], files)
    assert check.exit_code == 0, str(check)
    broken = {layout.BALANCER_CONFIG: Upload(render_balancer_cfg().replace("balance roundrobin", "balance nowhere").encode())}
    assert run_once(resources, images["balancer"], ["haproxy", "-c", "-f", layout.BALANCER_CONFIG], broken).exit_code != 0
