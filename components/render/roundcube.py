"""Roundcube 1.6 config.inc.php: OAuth login through authentik, IMAP at
Dovecot and SMTP at Postfix with the user's access token (XOAUTH2).

No PHP value is built by pasting strings: the settings are one JSON document
in a nowdoc (no interpolation, no escapes) that PHP decodes at load time. JSON
produced by `json.dumps(..., ensure_ascii=True, indent=...)` has no raw line
breaks inside strings, and each of its lines starts with whitespace, a quote
or a bracket, so no credential can end the nowdoc or reach PHP as code.
"""

from __future__ import annotations

import json
from typing import Any, Optional
from urllib.parse import quote

from components.oauth_scopes import ROUNDCUBE_SCOPES
from components.render import layout
from components.settings import Settings, validity_seconds

# The nowdoc's closing marker; no line of the JSON document can start with it.
_MARKER = "ROUNDCUBE_AUTHENTIK_JSON"

# What Roundcube asks authentik for: exactly the scopes the provider maps.
OAUTH_SCOPE = " ".join(ROUNDCUBE_SCOPES)


# Roundcube's default keep-alive and mail-check interval.
DEFAULT_REFRESH_SECONDS = 60


def keepalive_seconds(settings: Settings) -> int:
    """Roundcube's refresh_interval: its default, or a third of a short access-token lifetime."""
    lifetime = validity_seconds(settings.access_token_validity)
    if lifetime > 2 * DEFAULT_REFRESH_SECONDS:
        return DEFAULT_REFRESH_SECONDS
    return max(1, int(lifetime // 3))


def roundcube_settings(settings: Settings, client_id: str, client_secret: str, des_key: str,
                       database_password: Optional[str] = None) -> dict[str, Any]:
    """The `$config` array Roundcube gets, as Python data."""
    # The browser goes to the public URL; Roundcube's own calls may take
    # another way in (authentik_internal_url).
    authorize = f"{settings.authentik_url}/application/o/authorize/"
    backchannel = f"{settings.authentik_backchannel_url}/application/o"
    return {
        "product_name": settings.app_name,
        "db_dsnw": _database(database_password),
        "des_key": des_key,
        **_mail_servers(settings),
        "oauth_provider": "generic",
        "oauth_provider_name": "authentik",
        "oauth_client_id": client_id,
        "oauth_client_secret": client_secret,
        "oauth_auth_uri": authorize,
        "oauth_token_uri": f"{backchannel}/token/",
        "oauth_identity_uri": f"{backchannel}/userinfo/",
        "oauth_scope": OAUTH_SCOPE,
        "oauth_identity_fields": ["email"],
        # A "Login with authentik" button on the login page, no automatic redirect.
        "oauth_login_redirect": False,
        # Passed to Guzzle's `verify`: true (system CAs) or a CA bundle's path.
        "oauth_verify_peer": layout.AUTHENTIK_CA_FILE if settings.authentik_ca_file is not None else True,
        # Behind a TLS proxy Roundcube sees plain HTTP; it must still build
        # https:// redirect URIs and mark its cookies secure.
        "use_https": settings.roundcube_url.startswith("https://"),
        # `docker logs` shows Roundcube's logs (php://stdout is Apache's stdout).
        "log_driver": "stdout",
        "log_logins": True,
        # Replicas share the database: a compose upload must be found by the next
        # request, whichever replica serves it, so attachments go there too.
        "plugins": ["database_attachments"] if database_password is not None else [],
        "skin": "elastic",
        "enable_installer": False,
        "login_autocomplete": 0,
        # Minutes of inactivity; the refresh token keeps the IMAP login alive.
        "session_lifetime": 30,
        # Roundcube refreshes the access token `refresh_interval + 10` s before
        # it expires, and only if the token lives longer than the interval.
        "refresh_interval": keepalive_seconds(settings),
        "min_refresh_interval": min(60, keepalive_seconds(settings)),
        # A user's own longer interval would let tokens lapse between refreshes.
        "dont_override": ["refresh_interval"],
        # Lax: the cookie must come along on authentik's redirect back.
        "session_samesite": "Lax",
        "ip_check": False,
        "support_url": "",
    }


def _database(password: Optional[str]) -> str:
    """sqlite in a volume for one Roundcube; PostgreSQL (images/postgres) shared by replicas."""
    if password is None:
        return f"sqlite:///{layout.ROUNDCUBE_DB_FILE}?mode=0640"
    # Roundcube url-decodes the DSN's user info: any password character is safe encoded.
    return f"pgsql://roundcube:{quote(password, safe='')}@{layout.POSTGRES_HOST}:{layout.POSTGRES_PORT}/roundcube"


def _mail_servers(settings: Settings) -> dict[str, Any]:
    """Dovecot and Postfix on the private network; 1.6.20 logs in with XOAUTH2
    (the identity as user, `Bearer <token>`) on both."""
    imap = f"{layout.DOVECOT_HOST}:{layout.IMAP_PORT}"
    smtp = f"{layout.POSTFIX_HOST}:{layout.WEBMAIL_SUBMISSION_PORT}"
    if settings.tls is None:
        # No certificate in this stack: tokens never leave the Docker network.
        return {"imap_host": imap, "smtp_host": smtp}
    # With a certificate, no login anywhere is in clear, this hop included
    # (Dovecot's auth_allow_cleartext = no): STARTTLS to the containers'
    # names, checked against mail_hostname, the certificate's name.
    tls: dict[str, Any] = {"ssl": {"peer_name": settings.host_name, "verify_peer": True, "verify_peer_name": True}}
    if settings.tls.ca_file is not None:
        tls["ssl"]["cafile"] = layout.TLS_CA_FILE
    return {"imap_host": f"tls://{imap}", "smtp_host": f"tls://{smtp}", "imap_conn_options": tls, "smtp_conn_options": tls}


def render_roundcube_config(settings: Settings, client_id: str, client_secret: str, des_key: str,
                            database_password: Optional[str] = None) -> str:
    document = json.dumps(
        roundcube_settings(settings, client_id, client_secret, des_key, database_password), indent=2, ensure_ascii=True
    )
    for line in document.splitlines():
        if line.lstrip().startswith(_MARKER):  # cannot happen with json.dumps; kept as a guard
            raise ValueError("the JSON document would end the PHP nowdoc early")
    return "\n".join(
        [
            "<?php",
            "// Rendered by roundcube-authentik (components/render/roundcube.py) from the",
            "// stack settings. Do not edit: the program replaces it on every change.",
            "// It holds the OAuth client secret and the DES key.",
            "$config = json_decode(<<<'" + _MARKER + "'",
            document,
            _MARKER + ",",
            "    true, 512, JSON_THROW_ON_ERROR);",
            "",
            *_CALLBACK_QUERY_OUT_OF_LOGS,
            "",
        ]
    )


# Roundcube's error log lines end with the request URI; on the OAuth callback
# its query carries the authorization code. Roundcube reads the code from
# $_GET and only ever looks at the path of REQUEST_URI, so the query goes.
_CALLBACK_QUERY_OUT_OF_LOGS = [
    "// Keep the OAuth callback's authorization code out of Roundcube's error log.",
    "if (isset($_SERVER['REQUEST_URI']) && strpos($_SERVER['REQUEST_URI'], '/login/oauth?') !== false) {",
    "    $_SERVER['REQUEST_URI'] = strstr($_SERVER['REQUEST_URI'], '?', true);",
    "}",
]


def extract_json_document(php_source: str) -> dict[str, Any]:
    """The settings back from a rendered config.inc.php (for tests and tools)."""
    start = php_source.index("<<<'" + _MARKER + "'\n") + len(_MARKER) + 6
    end = php_source.index("\n" + _MARKER + ",", start)
    return json.loads(php_source[start:end])
