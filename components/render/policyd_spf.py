"""postfix-policyd-spf-python 3.1 (Debian trixie) policyd-spf.conf: SPF checks
of mail arriving on port 25, asked by Postfix as a policy service.

Mail whose sender domain's SPF record says `-all` for the client (Fail) is
refused; every other result is recorded in an Authentication-Results header
under the mail host's name, next to OpenDKIM's DKIM result.
"""

from __future__ import annotations

from components.settings import Settings


def render_policyd_spf_conf(settings: Settings) -> str:
    lines = [
        "# Rendered by roundcube-authentik (components/render/policyd_spf.py) from the",
        "# stack settings. Do not edit: the program replaces it on every change.",
        "debugLevel = 1",
        "# 1 = really act on the results (0 would only add headers).",
        "TestOnly = 1",
        "HELO_reject = Fail",
        "Mail_From_reject = Fail",
        "PermError_reject = False",
        "TempError_Defer = False",
        "skip_addresses = 127.0.0.0/8,::ffff:127.0.0.0/104,::1",
        "Header_Type = AR",
        f"Authserv_Id = {settings.host_name}",
        "Lookup_Time = 20",
    ]
    return "\n".join(lines) + "\n"
