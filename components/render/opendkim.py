"""OpenDKIM 2.11 (Debian trixie) opendkim.conf: sign what the submission ports
accept, verify what arrives on port 25, record the result in an
Authentication-Results header.

Postfix marks the submission ports with the milter macro
`{daemon_name} = ORIGINATING` (master.cf); OpenDKIM signs exactly the mail
that carries it (MacroList) and verifies everything else.
"""

from __future__ import annotations

from components.render import layout
from components.settings import Settings

# The value Postfix's submission ports give `milter_macro_daemon_name`.
ORIGINATING = "ORIGINATING"
# Docker's resolver inside every container on a user-defined network. Debian's
# OpenDKIM 2.11 is built with libunbound, which without a forwarder resolves
# from the root servers itself (ignoring resolv.conf: OpenDKIM issue #181) and
# by default never queries a loopback address; its configuration
# (unbound.conf) makes it forward every query to Docker's resolver, which
# every other process of the container asks too. (libunbound also answers
# names under .test itself, NXDOMAIN, as RFC 6761 allows.)
DOCKER_RESOLVER = "127.0.0.11"


def render_opendkim_conf(settings: Settings) -> str:
    lines = [
        "# Rendered by roundcube-authentik (components/render/opendkim.py) from the",
        "# stack settings. Do not edit: the program replaces it on every change.",
        "Background no",
        "Syslog yes",
        "SyslogSuccess yes",
        "LogResults yes",
        "UserID opendkim",  # uid/gid layout.OPENDKIM_UID/GID in images/opendkim
        "UMask 007",
        f"Socket inet:{layout.MILTER_PORT}",
        "",
        "# Signing: one key, selected by the dkim_selector setting.",
        "Mode sv",
        f"Domain {settings.mail_domain}",
        f"Selector {settings.dkim_selector}",
        f"KeyFile {layout.dkim_key_file(settings.dkim_selector)}",
        "RequireSafeKeys yes",
        "SignatureAlgorithm rsa-sha256",
        "Canonicalization relaxed/simple",
        "OversignHeaders From",
        "# Only mail Postfix accepted on a submission port is signed. The other",
        "# trigger, InternalHosts, keeps its default 127.0.0.1: no SMTP client of",
        "# Postfix has this container's loopback address.",
        f"MacroList daemon_name|{ORIGINATING}",
        "",
        "# Verifying: the result goes into Authentication-Results under the mail",
        "# host's name; such headers that arrive from outside are removed first.",
        f"AuthservID {settings.host_name}",
        f"RemoveARFrom {settings.host_name}",
        "AlwaysAddARHeader yes",
        "MinimumKeyBits 1024",
        f"ResolverConfiguration {layout.OPENDKIM_UNBOUND_CONF}",
    ]
    return "\n".join(lines) + "\n"


def render_opendkim_unbound_conf() -> str:
    """libunbound's configuration for OpenDKIM: forward everything to Docker's resolver."""
    return "\n".join(
        [
            "# Rendered by roundcube-authentik (components/render/opendkim.py).",
            "server:",
            "    do-not-query-localhost: no",
            "forward-zone:",
            '    name: "."',
            f"    forward-addr: {DOCKER_RESOLVER}",
        ]
    ) + "\n"
