"""Postfix 3.10 main.cf and master.cf: inbound SMTP for the mail domain,
submission authenticated by Dovecot (XOAUTH2 / OAUTHBEARER tokens), delivery
to Dovecot over LMTP. Nothing is chrooted: the container is the sandbox.
"""

from __future__ import annotations

from components.render import layout
from components.render.opendkim import ORIGINATING
from components.settings import Settings

_HEADER = [
    "# Rendered by roundcube-authentik (components/render/postfix.py) from the",
    "# stack settings. Do not edit: the program replaces it on every change.",
]

# Each login is an email address (Dovecot's username_attribute = email) and
# owns exactly that address. `$$` is a literal `$` in main.cf.
SENDER_LOGIN_MAP = "regexp:{{/^(.+)$$/ $${1}}}"


# What a local part of mail_domain may be: dot-separated words of letters,
# digits and `_ + = -`. Anything else (`.`, `..`, a leading or trailing dot, `/`,
# spaces, quotes, `%`) would name another folder than the mailbox's own under
# Dovecot's /var/mail/<domain>/, or is not an address a person would have.
SAFE_LOCAL_PART = r"[A-Za-z0-9_+=-]+(\.[A-Za-z0-9_+=-]+)*"


def local_part_check(settings: Settings) -> str:
    """A recipient restriction refusing unsafe local parts of mail_domain with 553 (RFC 5321: mailbox name not allowed).

    Postfix hands the table the address unquoted (`".."@d` arrives as `..@d`).
    The rule matches an address of the domain (first pattern) whose whole form
    is not a safe one (second pattern); `$$` is a literal `$` in main.cf.
    """
    domain = settings.mail_domain.replace(".", "\\.")
    rule = f"/@{domain}$$/!/^{SAFE_LOCAL_PART}@{domain}$$/ 553 5.1.3 Bad recipient address syntax"
    return f"check_recipient_access regexp:{{{{{rule}}}}}"


def render_postfix_main_cf(settings: Settings) -> str:
    lines = [
        *_HEADER,
        "compatibility_level = 3.6",
        "maillog_file = /dev/stdout",
        "",
        f"myhostname = {settings.host_name}",
        "myorigin = $myhostname",
        "smtpd_banner = $myhostname ESMTP",
        "biff = no",
        "append_dot_mydomain = no",
        "readme_directory = no",
        "inet_interfaces = all",
        "inet_protocols = ipv4",
        "",
        "# No local delivery: every mailbox is Dovecot's, reached over LMTP.",
        "mydestination =",
        "alias_maps =",
        "alias_database =",
        "local_recipient_maps =",
        f"virtual_mailbox_domains = {settings.mail_domain}",
        *_recipients(settings),
        f"virtual_transport = lmtp:inet:{layout.DOVECOT_HOST}:{layout.LMTP_PORT}",
        f"relayhost = {settings.relay_host or ''}".rstrip(),
        "mynetworks = 127.0.0.0/8",
        "",
        "# SASL through Dovecot's auth service. Dovecot reports XOAUTH2 and",
        "# OAUTHBEARER as plaintext mechanisms: `noplaintext` would leave none and",
        "# smtpd would die; TLS is required per port in master.cf instead.",
        "smtpd_sasl_type = dovecot",
        f"smtpd_sasl_path = {layout.SASL_SOCKET}",
        "smtpd_sasl_auth_enable = no",
        "smtpd_sasl_security_options = noanonymous",
        "smtpd_sasl_tls_security_options = noanonymous",
        "smtpd_sasl_authenticated_header = no",
        "# authentik's access tokens are ~1800-character JWTs, sent inline on the",
        "# AUTH line by many clients.",
        "line_length_limit = 8192",
        "",
        "# Behind Docker's published ports every client shows as the bridge",
        "# gateway: its reverse lookup names nobody and can stall a session for",
        "# seconds on the resolver.",
        "smtpd_peername_lookup = no",
        "smtpd_helo_required = yes",
        "disable_vrfy_command = yes",
        "smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination",
        f"smtpd_sender_login_maps = {_sender_logins(settings)}",
        "# Every port that takes recipients refuses local parts that could name",
        "# another mailbox's folder (master.cf's ports extend this list).",
        f"local_part_check = {local_part_check(settings)}",
        "smtpd_recipient_restrictions = $local_part_check",
        "",
        "# DKIM: OpenDKIM signs what the submission ports accept and verifies what",
        "# arrives on port 25. Without it no mail passes (tempfail), never unsigned.",
        f"smtpd_milters = inet:{layout.OPENDKIM_HOST}:{layout.MILTER_PORT}",
        "non_smtpd_milters =",
        "milter_default_action = tempfail",
        "milter_protocol = 6",
        "",
        "# Port 25 goes through postscreen first: clients that talk before the",
        "# greeting are dropped; DNSBL zones only when dnsbl_sites lists some.",
        "postscreen_greet_action = drop",
        "postscreen_access_list = permit_mynetworks",
        *_dnsbl(settings),
        "# SPF of inbound mail (policyd-spf, see master.cf), at most one per session.",
        "policyd-spf_time_limit = 3600",
        "",
        "# Outbound: TLS when the other side offers it.",
        "smtp_tls_security_level = may",
        "smtp_tls_CApath = /etc/ssl/certs",
        *_server_tls(settings),
    ]
    return "\n".join(lines) + "\n"


def _recipients(settings: Settings) -> list[str]:
    if settings.directory.source == "open":
        return ["# directory: open: every local part of the domain is accepted (Dovecot makes the mailbox)."]
    return [
        "# directory: authentik. The directory sync's hashed maps: an address that is",
        "# no mailbox, alias or list is refused at RCPT with 550 5.1.1. The sync",
        "# replaces each .db file whole; each daemon notices (the old file is",
        "# unlinked) and restarts before its next client, with no reload.",
        f"virtual_mailbox_maps = {layout.POSTFIX_MAILBOX_MAP}",
        f"virtual_alias_maps = {layout.POSTFIX_ALIAS_MAP}",
    ]


def _sender_logins(settings: Settings) -> str:
    # With the directory, a login owns its address and its aliases (senders map).
    return SENDER_LOGIN_MAP if settings.directory.source == "open" else layout.POSTFIX_SENDER_MAP


def _dnsbl(settings: Settings) -> list[str]:
    if not settings.dnsbl_sites:
        return ["postscreen_dnsbl_sites ="]
    return [
        f"postscreen_dnsbl_sites = {', '.join(settings.dnsbl_sites)}",
        "postscreen_dnsbl_threshold = 1",
        "postscreen_dnsbl_action = enforce",
    ]


def _server_tls(settings: Settings) -> list[str]:
    if settings.tls is None:
        return ["smtpd_tls_security_level = none"]
    return [
        "# Inbound: the certificate for STARTTLS; each port sets its own level.",
        f"smtpd_tls_cert_file = {layout.TLS_CERT_FILE}",
        f"smtpd_tls_key_file = {layout.TLS_KEY_FILE}",
        "smtpd_tls_security_level = none",
        "smtpd_tls_mandatory_protocols = >=TLSv1.2",
        "smtpd_tls_loglevel = 1",
    ]


# master.cf: service, type, private, unpriv, chroot, wakeup, maxproc, command.
_INTERNAL_SERVICES = [
    ("pickup", "unix", "n", "-", "n", "60", "1", "pickup"),
    ("cleanup", "unix", "n", "-", "n", "-", "0", "cleanup"),
    ("qmgr", "unix", "n", "-", "n", "300", "1", "qmgr"),
    ("tlsmgr", "unix", "-", "-", "n", "1000?", "1", "tlsmgr"),
    ("rewrite", "unix", "-", "-", "n", "-", "-", "trivial-rewrite"),
    ("bounce", "unix", "-", "-", "n", "-", "0", "bounce"),
    ("defer", "unix", "-", "-", "n", "-", "0", "bounce"),
    ("trace", "unix", "-", "-", "n", "-", "0", "bounce"),
    ("verify", "unix", "-", "-", "n", "-", "1", "verify"),
    ("flush", "unix", "n", "-", "n", "1000?", "0", "flush"),
    ("proxymap", "unix", "-", "-", "n", "-", "-", "proxymap"),
    ("proxywrite", "unix", "-", "-", "n", "-", "1", "proxymap"),
    ("smtp", "unix", "-", "-", "n", "-", "-", "smtp"),
    ("relay", "unix", "-", "-", "n", "-", "-", "smtp"),
    ("showq", "unix", "n", "-", "n", "-", "-", "showq"),
    ("error", "unix", "-", "-", "n", "-", "-", "error"),
    ("retry", "unix", "-", "-", "n", "-", "-", "error"),
    ("discard", "unix", "-", "-", "n", "-", "-", "discard"),
    ("local", "unix", "-", "n", "n", "-", "-", "local"),
    ("virtual", "unix", "-", "n", "n", "-", "-", "virtual"),
    ("lmtp", "unix", "-", "-", "n", "-", "-", "lmtp"),
    ("anvil", "unix", "-", "-", "n", "-", "1", "anvil"),
    ("scache", "unix", "-", "-", "n", "-", "1", "scache"),
    ("postlog", "unix-dgram", "n", "-", "n", "-", "1", "postlogd"),
    ("dnsblog", "unix", "-", "-", "n", "-", "0", "dnsblog"),
    ("tlsproxy", "unix", "-", "-", "n", "-", "0", "tlsproxy"),
]

# Port 25: the recipient must be ours, then the sender's SPF is checked.
INBOUND_RECIPIENT_RULES = "$local_part_check,reject_unauth_destination,check_policy_service,unix:private/policyd-spf"


def render_postfix_master_cf(settings: Settings) -> str:
    tls = settings.tls is not None
    # Submission ports: only authenticated clients, each sending as itself.
    submission_rules = [
        "smtpd_sasl_auth_enable=yes",
        # OpenDKIM signs the mail of these ports only (its MacroList).
        f"milter_macro_daemon_name={ORIGINATING}",
        "smtpd_client_restrictions=permit_sasl_authenticated,reject",
        "smtpd_sender_restrictions=reject_sender_login_mismatch",
        "smtpd_relay_restrictions=permit_sasl_authenticated,reject",
    ]
    lines = [
        *_HEADER,
        "# service   type  private unpriv  chroot  wakeup  maxproc command + args",
        "",
        "# Inbound mail for the mail domain (MX): postscreen, then smtpd.",
        _service(str(layout.SMTP_PORT), "inet", "n", "-", "n", "-", "1", "postscreen"),
        _option("syslog_name=postfix/smtp"),
        *([_option("smtpd_tls_security_level=may")] if tls else []),
        _service("smtpd", "pass", "-", "-", "n", "-", "-", "smtpd"),
        _option("syslog_name=postfix/smtp"),
        *([_option("smtpd_tls_security_level=may")] if tls else []),
        _option(f"smtpd_recipient_restrictions={INBOUND_RECIPIENT_RULES}"),
        "",
        "# The SPF policy service of port 25 (postfix-policyd-spf-python).",
        _service("policyd-spf", "unix", "-", "n", "n", "-", "0", "spawn"),
        f"  user=policyd-spf argv=/usr/bin/policyd-spf {layout.POLICYD_SPF_CONF}",
        "",
        "# Mail clients. With tls, AUTH is offered only after STARTTLS.",
        _service(str(layout.SUBMISSION_PORT), "inet", "n", "-", "n", "-", "-", "smtpd"),
        _option("syslog_name=postfix/submission"),
        *(
            [_option("smtpd_tls_security_level=encrypt"), _option("smtpd_tls_auth_only=yes")]
            if tls
            else []
        ),
        *[_option(rule) for rule in submission_rules],
        "",
        "# Roundcube only: the private network, never published. With tls, Roundcube",
        "# uses STARTTLS here too: no login is ever in clear.",
        _service(str(layout.WEBMAIL_SUBMISSION_PORT), "inet", "n", "-", "n", "-", "-", "smtpd"),
        _option("syslog_name=postfix/webmail"),
        *(
            [_option("smtpd_tls_security_level=encrypt"), _option("smtpd_tls_auth_only=yes")]
            if tls
            else [_option("smtpd_tls_security_level=none")]
        ),
        *[_option(rule) for rule in submission_rules],
        "",
        *[_service(*row) for row in _INTERNAL_SERVICES],
    ]
    return "\n".join(lines) + "\n"


def _service(*fields: str) -> str:
    name, kind, *rest = fields
    return f"{name:<10} {kind:<10} " + "  ".join(f"{field:<6}" for field in rest).rstrip()


def _option(setting: str) -> str:
    return f"  -o {setting}"
