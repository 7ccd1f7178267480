"""benchmarks/logins.py without Docker: its flags, its table, and the ceilings' configs
(each the program's rendered dovecot.conf with one passdb swapped, nothing else changed)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from benchmarks import logins
from components.render.dovecot import render_dovecot_conf
from components.settings import Settings, load_settings
from offline.stack_file import read_stack_text, settings_document


def prod_settings(tmp_path: Path, **fields: Any) -> Settings:
    pem = tmp_path / "some.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    config = {"mail_domain": "example.com", "roundcube_url": "https://webmail.example.com",
              "authentik_url": "https://auth.example.com", "tls": {"cert_file": str(pem), "key_file": str(pem)},
              "relay_host": "[smtp.example.net]:587", "directory": {"postmaster": "alice@example.com"}, **fields}
    stack = read_stack_text(settings_document("roundcube-authentik", config), "roundcube-authentik")
    return load_settings(stack.values, stack.project)


def test_flags_default_to_both_suites_the_documented_runs_and_the_settings_cache():
    args = logins.arguments([])
    assert args.suites == ("tokens", "app-passwords")
    assert args.runs == ((1, 300), (8, 100))
    assert args.cache_seconds == 60


def test_runs_and_suites_flags_parse_and_refuse_what_cannot_run():
    assert logins.parse_runs("1x30, 4×10") == ((1, 30), (4, 10))
    assert logins.parse_suites("app-passwords") == ("app-passwords",)
    assert logins.parse_suites("app-passwords,tokens") == ("tokens", "app-passwords")
    for bad in ("0x10", "8", "8x0", f"{len(logins.BENCH_USERS) + 1}x1"):
        with pytest.raises(argparse.ArgumentTypeError):
            logins.parse_runs(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        logins.parse_suites("ldap")


def test_table_has_a_row_per_mode_and_run_and_the_ratio_line():
    row = {"logins_per_s": 40.0, "median_ms": 20.1, "p95_ms": 30.2, "idp_calls_per_login": 0.01, "errors": 0}
    results = {"settings": {"runs": [[1, 30], [8, 10]], "suites": ["app-passwords"]},
               **{mode: {"1": row, "8": row} for mode in logins.SUITES["app-passwords"]},
               "ratios": {"app-password (cached) / password ceiling": {"1": 1.0, "8": 1.0}}}
    lines = logins.table(results).splitlines()
    assert lines[0] == "| mode | clients × logins | logins/s | median ms | p95 ms | IdP calls/login | errors |"
    assert "| app-password (no cache) | 8 × 10 | 40.0 | 20.1 | 30.2 | 0.01 | 0 |" in lines
    assert len([line for line in lines if line.startswith("| ")]) == 1 + 3 * 2
    assert lines[-1] == "app-password (cached) / password ceiling: 1 client(s): 1.0, 8 client(s): 1.0"


def test_password_ceiling_swaps_only_the_app_password_passdb_in_its_place(tmp_path: Path):
    conf = render_dovecot_conf(prod_settings(tmp_path, clients={"app_passwords": True}), "client", "secret")
    ceiling = logins.password_ceiling_conf(conf)
    assert "driver = lua" not in ceiling and "app-password" not in ceiling.replace("# App passwords", "")
    before, after = conf.split("passdb app_password {\n")
    assert ceiling.startswith(before) and ceiling.endswith(after.split("\n}\n", 1)[1])
    block = ceiling[len(before):].split("\n}\n", 1)[0]
    assert f"passwd_file_path = {logins.CEILING_PASSWD_FILE}" in block and "mechanisms_filter = plain login" in block
    # Still after the deny passdbs and before the directory's.
    assert ceiling.index("passdb unsafe_local_part") < ceiling.index("passdb password_ceiling") \
        < ceiling.index("passdb directory")


def test_token_ceiling_has_plain_instead_of_oauth_before_the_directory(tmp_path: Path):
    conf = render_dovecot_conf(prod_settings(tmp_path), "client", "secret")
    ceiling = logins.ceiling_conf(conf)
    assert "oauth2 {" not in ceiling and "oauth2_local_validation {" not in ceiling
    assert "auth_mechanisms = plain\n" in ceiling
    assert ceiling.index("passdb ceiling {") < ceiling.index("passdb directory {") \
        < ceiling.index("passdb not_in_directory {")


def test_hash_scheme_keeps_the_scheme_and_cost_not_the_salt():
    assert logins.hash_scheme("{CRYPT}$2y$05$cSU3S/DgdJYlaMaPvc.vqeZInNE9ju2Sj256otEnmI9PGz") == "{CRYPT}$2y$05$"
    assert logins.hash_scheme("{PLAIN}secret") == "{PLAIN}"
