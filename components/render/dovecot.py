"""dovecot.conf (Dovecot 2.4): IMAP, LMTP and the SASL auth service, with every
OAuth 2 bearer token checked as `token_validation` says, and the settings of
the two helper scripts in Dovecot's image.

- `local` (default): Dovecot checks the JWT itself (`introspection_mode =
  local`) with the keys images/dovecot/jwks-sync.py copies from authentik's
  JWKS. No call to authentik per login; refresh tokens (opaque) are refused.
- `introspection`: one HTTP call per login, `introspection_mode = post` with
  the client's credentials as the URL's user info (Dovecot sends them as HTTP
  Basic), `force_introspection` so the `active` answer always decides. The
  URL is images/dovecot/introspection-filter.py on the loopback: it refuses
  non-JWTs, since authentik reports refresh tokens active. (Dovecot 2.4.1
  cannot do both itself: with `introspection_mode = local` it never calls
  out, whatever force_introspection, introspection_url or tokeninfo_url say.)
  No `tokeninfo_url`: in 2.4.1 the active check would then run on the
  userinfo answer, which has no `active` field, and every login would fail.
"""

from __future__ import annotations

import json
import re
from urllib.parse import quote

from components.render import layout
from components.settings import Settings

# The system's CA bundle folder (Debian's ca-certificates), used for the
# oauth2 HTTP client when no authentik CA is configured.
SYSTEM_CA_DIR = "/etc/ssl/certs"

# Local parts that would name a folder outside their own (Dovecot username_filter masks).
UNSAFE_LOCAL_PARTS = (".*@*", "*.@*", "*..*@*")

# Characters a value may have and still be written bare; anything else is quoted.
_BARE = re.compile(r"^[A-Za-z0-9_./:@=+,-]+$")


def render_dovecot_conf(settings: Settings, client_id: str, client_secret: str) -> str:
    """The whole dovecot.conf; the image reads nothing else."""
    lines = [
        "# Rendered by roundcube-authentik (components/render/dovecot.py) from the",
        "# stack settings. Do not edit: the program replaces it on every change.",
        "# It holds the OAuth client secret.",
        # 2.4 refuses a config whose first setting is anything else.
        "dovecot_config_version = 2.4.0",
        "dovecot_storage_version = 2.4.0",
        "",
        "protocols = imap lmtp",
        "log_path = /dev/stderr",
        "",
        *_mechanisms(settings),
        "# Why a login failed (bad token, wrong user, authentik unreachable), never",
        "# the token itself. (Never the debug switch: it logs the introspection URL with its secret.)",
        "auth_verbose = yes",
        "",
        *_oauth2(settings, client_id, client_secret),
        "",
        *_mail_domain_only(settings),
        "",
        *_app_passwords(settings),
        *(_directory_users() if settings.directory.source == "authentik" else _open_users(settings)),
        "mail_driver = maildir",
        "mail_path = ~/Maildir",
        "",
        "# Per-mailbox quota. Mail that would exceed it is refused at LMTP's",
        "# RCPT with a permanent 552 (quota_full_tempfail = no), so the sender's",
        "# server bounces it instead of queueing it for days. The size is set",
        "# outside the quota block so that a user's own quota from the directory",
        "# (passwd-file field userdb_quota_storage_size) overrides it: Dovecot",
        "# 2.4.1 applies such a field to the global setting only.",
        "mail_plugins {",
        "  quota = yes",
        "}",
        f"quota_storage_size = {_value(settings.mailbox_quota)}",
        "quota mailbox {",
        "}",
        "quota_full_tempfail = no",
        "lmtp_rcpt_check_quota = yes",
        "protocol imap {",
        "  # Mail clients (Roundcube too) can show how full the mailbox is.",
        "  mail_plugins {",
        "    imap_quota = yes",
        "  }",
        "}",
        "",
        "# The folders every mail client looks for, created at first login.",
        "namespace inbox {",
        "  inbox = yes",
        *[
            line
            for name, use in (("Drafts", "\\Drafts"), ("Sent", "\\Sent"), ("Trash", "\\Trash"), ("Junk", "\\Junk"))
            for line in (f"  mailbox {name} {{", f"    special_use = {use}", "    auto = subscribe", "  }")
        ],
        "}",
        "",
        *_server_tls(settings),
        "",
        "service imap-login {",
        "  inet_listener imap {",
        "    listen = *",
        f"    port = {layout.IMAP_PORT}",
        "  }",
        "  inet_listener imaps {",
        *(
            ["    listen = *", f"    port = {layout.IMAPS_PORT}", "    ssl = yes"]
            if settings.tls is not None
            else ["    # no tls in this stack: no IMAPS", "    port = 0"]
        ),
        "  }",
        "}",
        "",
        "# Postfix delivers here.",
        "service lmtp {",
        "  inet_listener lmtp {",
        "    listen = *",
        f"    port = {layout.LMTP_PORT}",
        "  }",
        "}",
        "",
        "# Postfix authenticates submission here (smtpd_sasl_type = dovecot): a UNIX",
        "# socket in a volume only Dovecot and Postfix mount. Postfix notices a",
        "# closed UNIX socket when it writes and reconnects, so its AUTHs survive a",
        "# reload or restart of Dovecot (over TCP they failed once with 454).",
        "service auth {",
        "  unix_listener postfix-auth {",
        f"    path = {_value(layout.SASL_SOCKET)}",
        "    # Postfix's smtpd runs as the postfix user, unknown in this image.",
        "    mode = 0666",
        "  }",
        "}",
        "",
        *_no_auth_penalty(),
    ]
    return "\n".join(lines) + "\n"


def _no_auth_penalty() -> list[str]:
    """Dovecot's auth penalty, off: it is kept per client address and grows to 15 s.

    Every Roundcube user logs in from Roundcube's one address, and Postfix
    waits only 10 s for Dovecot (AUTH_TIMEOUT in xsasl_dovecot_server.c), so
    one user's failed logins delayed everybody's and made Postfix answer 454
    to good ones. Nothing here is guessable by retrying: bearer tokens are
    signed JWTs. Each failed login is still answered only after
    auth_failure_delay (2 s), which delays that client alone.

    Dovecot 2.4.1 has no setting for the penalty; the auth process asks anvil
    over the `anvil-auth-penalty` socket and does without the penalty when
    that socket does not exist (src/auth/auth-penalty.c), so anvil listens
    under another name. (The documented `mode = 0` does not stop it: the auth
    process connects while still root.)
    """
    return [
        "# No auth penalty (components/render/dovecot.py, _no_auth_penalty): it is",
        "# per client address, and Roundcube's users all share one.",
        "service anvil {",
        "  unix_listener anvil-auth-penalty {",
        "    path = anvil-auth-penalty-off",
        "  }",
        "}",
    ]


def _oauth2(settings: Settings, client_id: str, client_secret: str) -> list[str]:
    username = [
        "  username_attribute = email",
        "  # Dovecot lower-cases the login name (auth_username_format); compare",
        "  # authentik's email the same way, or Alice@Example.com never logs in.",
        f"  username_validation_format = {_value('%{user | lower}')}",
    ]
    if settings.token_validation == "introspection":
        return [
            "# token_validation: introspection. authentik's introspection endpoint",
            "# decides every login (one call; a revoked token stops at once), through",
            "# the container's introspection-filter, which refuses refresh tokens",
            "# (not JWTs) that authentik would report active.",
            "oauth2 {",
            f"  introspection_url = {_value(introspection_url(settings, client_id, client_secret))}",
            "  introspection_mode = post",
            "  force_introspection = yes",
            "  active_attribute = active",
            "  active_value = true",
            *username,
            "  # authentik answers in milliseconds; one that hangs fails the login",
            "  # after 10 s instead of Dovecot's default minute.",
            "  http_client_request_absolute_timeout = 10s",
            "  http_client_connect_timeout = 5s",
            "}",
        ]
    return [
        "# token_validation: local. Each access token (a JWT) is checked here, with",
        "# no call to authentik: RS256 signature by a key authentik publishes",
        "# (jwks-sync keeps them under the dict below), issuer, audience (the client",
        "# id), expiry, and the user from the email claim. Anything that is not such",
        "# a JWT (a refresh token, an HS256 token, garbage) is refused. A revoked",
        "# token works until it expires: the access-token lifetime is the window.",
        "oauth2 {",
        "  introspection_mode = local",
        "  # authentik takes the issuer from the Host of the token request.",
        f"  issuers = {' '.join(_value(issuer) for issuer in settings.token_issuers)}",
        f"  audience = {_value(client_id)}",
        *username,
        "}",
        "oauth2_local_validation {",
        "  dict fs {",
        "    fs posix {",
        f"      prefix = {_value(layout.OAUTH2_KEY_DIR + '/')}",
        "    }",
        "  }",
        "}",
    ]


def _mechanisms(settings: Settings) -> list[str]:
    if settings.tls is None:
        return [
            "# OAuth 2 bearer tokens only. No certificate in this stack: tokens cross",
            "# the private network and a loopback-only IMAP port in clear.",
            "auth_mechanisms = xoauth2 oauthbearer",
            "auth_allow_cleartext = yes",
        ]
    return [
        "# With a certificate, no login is ever in clear: every mechanism (Dovecot",
        "# counts XOAUTH2 and OAUTHBEARER as plaintext too) only after STARTTLS or",
        "# on IMAPS; Roundcube uses STARTTLS on the private network.",
        f"auth_mechanisms = {'xoauth2 oauthbearer plain login' if settings.clients.app_passwords else 'xoauth2 oauthbearer'}",
        "auth_allow_cleartext = no",
    ]


def _app_passwords(settings: Settings) -> list[str]:
    """PLAIN and LOGIN with an authentik app password (clients.app_passwords).

    Dovecot 2.4.1's own ways fall short: checkpassword is gone, and the oauth2
    passdb's password grant reports a wrong password as an internal failure
    and caches under one key for every user. So a thin Lua passdb
    (images/dovecot/app-password.lua, in the image) refuses anything not over
    TLS and asks images/dovecot/app-password-check.py on the loopback, which
    maps the address to the authentik user (the directory), caches successes
    for clients.cache_seconds, throttles failures and asks authentik's token
    endpoint. The HTTP request blocks, so it runs in auth worker processes.
    A wrong password ends the chain as a failure, an unreachable authentik as
    a temporary one, instead of falling through to the deny passdb below.
    """
    if not settings.clients.app_passwords:
        return []
    return [
        "# App passwords (clients.app_passwords): PLAIN and LOGIN, over TLS only.",
        "passdb app_password {",
        "  driver = lua",
        "  mechanisms_filter = plain login",
        f"  lua_file = {_value(layout.APP_PASSWORD_LUA)}",
        "  lua_settings {",
        f"    checker_url = {_value(f'http://127.0.0.1:{layout.APP_PASSWORD_CHECK_PORT}/check')}",
        "  }",
        "  use_worker = yes",
        "  result_failure = return-fail",
        "  result_internalfail = return-fail",
        "}",
    ]


def render_app_password_check_config(settings: Settings, client_id: str, client_secret: str) -> str:
    """app-password-check.py's settings (JSON); holds the client secret."""
    return json.dumps(
        {
            "listen_port": layout.APP_PASSWORD_CHECK_PORT,
            "token_url": f"{settings.authentik_backchannel_url}/application/o/token/",
            "client_id": client_id,
            "client_secret": client_secret,
            **authentik_trust(settings),
            # authentik writes the Host of the token request into `iss`.
            "issuers": settings.token_issuers,
            "directory_file": layout.DIRECTORY_JSON,
            "cache_seconds": settings.clients.cache_seconds,
            "scope": "openid email",
            "timeout": 10,
        },
        indent=2,
    ) + "\n"


def _open_users(settings: Settings) -> list[str]:
    """directory: open. Every safe local part of mail_domain is a mailbox (a catch-all)."""
    return [
        "# directory: open. Every address of the mail domain has a mailbox, owned",
        "# by vmail. The userdb asks the passdbs above whether a user exists",
        "# (allow_all_users = no), so LMTP refuses other domains and unsafe local",
        "# parts with 550 instead of making mailboxes.",
        "userdb static {",
        "  fields {",
        f"    uid = {layout.VMAIL_UID}",
        f"    gid = {layout.VMAIL_GID}",
        f"    home = {_value(layout.MAIL_DIR + '/%{user | domain}/%{user | username}')}",
        "  }",
        "  allow_all_users = no",
        "}",
        "passdb mail_domain {",
        "  driver = static",
        f"  username_filter = {_value('*@' + settings.mail_domain)}",
        "  # A crypt hash nothing matches: the passdb says who exists, never lets in.",
        f"  passdb_static_password = {_value('{CRYPT}*')}",
        "}",
    ]


def _directory_users() -> list[str]:
    """directory: authentik. Only the directory's mailboxes exist (images/postfix/directory-sync.py).

    The sync writes the passwd-file atomically; Dovecot checks its mtime and
    size at most once a second and reads a new one. Its `{CRYPT}*` hashes
    match no password: it says who exists (and their home and quota), after
    a token was accepted, and never lets anyone in by itself.
    """
    users = _value(layout.DOVECOT_USERS_FILE)
    return [
        "# directory: authentik. Only the mailboxes of authentik's directory exist:",
        "# a login or recipient missing from this file is refused (LMTP 550 5.1.1).",
        "passdb directory {",
        "  driver = passwd-file",
        f"  passwd_file_path = {users}",
        "}",
        "# After a token is accepted, a passdb's \"user unknown\" still counts as",
        "# success (src/auth/mech-oauth2.c, oauth2_verify_callback): only a denied",
        "# user is refused. So whoever the directory does not list is denied here,",
        "# or a deactivated user's token would still log into Postfix's SASL.",
        "passdb not_in_directory {",
        "  driver = static",
        "  deny = yes",
        "}",
        "userdb directory {",
        "  driver = passwd-file",
        f"  passwd_file_path = {users}",
        "}",
    ]


def _mail_domain_only(settings: Settings) -> list[str]:
    """Deny passdbs that bind every login and recipient to mail_domain's safe local parts.

    No passdb checks a password here: after a token is accepted, Dovecot asks
    the passdbs whether the user may log in (IMAP, and the auth service
    Postfix uses). A user outside mail_domain (or with a second `@`, or an
    unsafe local part) is found by a deny passdb and refused, however valid
    the token; one inside is then found by the directory's passwd-file (or,
    with directory: open, by a static passdb), whose hashes match nothing.
    """
    inside = f"*@{settings.mail_domain}"
    return [
        "# Only addresses of mail_domain: a valid token for carol@elsewhere is refused.",
        "# (A filter lets a user through when no `!` mask and some plain mask matches.)",
        "passdb outside_mail_domain {",
        "  driver = static",
        "  deny = yes",
        f"  username_filter = {_value('!' + inside)}",
        "}",
        "passdb second_at_sign {",
        "  driver = static",
        "  deny = yes",
        f"  username_filter = {_value('*@*@*')}",
        "}",
        "# A mailbox's folder is named after its local part: `.`, `..`, a leading or",
        "# trailing dot or two dots in a row would name another folder. (Dovecot's",
        "# auth_username_chars already refuses `/`, spaces, quotes and `%`.)",
        "passdb unsafe_local_part {",
        "  driver = static",
        "  deny = yes",
        f"  username_filter = {_value(' '.join(UNSAFE_LOCAL_PARTS))}",
        "}",
    ]


def authentik_trust(settings: Settings) -> dict[str, str]:
    """The CA trust of the container's HTTP clients to authentik."""
    if settings.authentik_ca_file is not None:
        return {"ca_file": layout.AUTHENTIK_CA_FILE}
    return {"ca_dir": SYSTEM_CA_DIR}


def render_jwks_sync_config(settings: Settings, client_id: str) -> str:
    """jwks-sync.py's settings (JSON), for token_validation: local."""
    return json.dumps(
        {
            "jwks_url": settings.jwks_url,
            **authentik_trust(settings),
            # authentik's access tokens name the client as azp: Dovecot looks
            # the key up under <key_dir>/<azp>/RS256/<kid>.
            "azp": client_id,
            "key_dir": layout.OAUTH2_KEY_DIR,
            "interval": settings.jwks_refresh_seconds,
        },
        indent=2,
    ) + "\n"


def render_introspection_filter_config(settings: Settings) -> str:
    """introspection-filter.py's settings (JSON), for token_validation: introspection."""
    return json.dumps(
        {
            "port": layout.INTROSPECTION_FILTER_PORT,
            "introspection_url": f"{settings.authentik_backchannel_url}/application/o/introspect/",
            **authentik_trust(settings),
            "timeout": 10,
        },
        indent=2,
    ) + "\n"


def introspection_url(settings: Settings, client_id: str, client_secret: str) -> str:
    """The introspection endpoint Dovecot calls, with the client's credentials as user info.

    It is introspection-filter.py on the container's loopback, which passes
    the request (and the credentials, as HTTP Basic) on to authentik's
    `<authentik>/application/o/introspect/`.

    Both credentials are percent-encoded with no character left bare, so the
    result holds only unreserved characters and `%XX`: nothing Dovecot 2.4
    expands (`%{...}`, `$...`) and nothing that ends the URL's user info.
    Dovecot decodes them again and sends the raw credentials as HTTP Basic
    (checked with Dovecot 2.4.1). A client id with `:` cannot be sent that way
    (RFC 7617), and Dovecot's auth process aborts on one, so it is refused here.
    """
    if ":" in client_id:
        raise ValueError("an OAuth client id for Dovecot's introspection cannot contain ':' (HTTP Basic user-id)")
    userinfo = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
    return f"http://{userinfo}@127.0.0.1:{layout.INTROSPECTION_FILTER_PORT}/application/o/introspect/"


def _server_tls(settings: Settings) -> list[str]:
    if settings.tls is None:
        return ["ssl = no"]
    return [
        "# STARTTLS on the IMAP port, implicit TLS on IMAPS.",
        "ssl = yes",
        f"ssl_server_cert_file = {_value(layout.TLS_CERT_FILE)}",
        f"ssl_server_key_file = {_value(layout.TLS_KEY_FILE)}",
    ]


def _value(text: str) -> str:
    """A setting's value in Dovecot's syntax: bare when safe, else double-quoted."""
    if _BARE.match(text):
        return text
    if any(c in text for c in "\r\n\0"):
        raise ValueError(f"a Dovecot setting cannot hold a line break or NUL: {text!r}")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
