"""The directory sync's settings (images/postfix/directory-sync.py), for directory: authentik."""

from __future__ import annotations

import json

from components.render import layout
from components.render.dovecot import authentik_trust
from components.settings import Settings

# authentik's API caps a page at 100 (2025.12+); asking for more gets 100.
PAGE_SIZE = 100


def render_directory_sync_config(settings: Settings) -> str:
    directory = settings.directory
    return json.dumps(
        {
            "api_url": settings.authentik_backchannel_url,
            "token_file": layout.DIRECTORY_TOKEN_FILE,
            **{"ca_file": None, "ca_dir": None, **authentik_trust(settings)},
            "mail_domain": settings.mail_domain,
            "allowed_group": settings.allowed_group,
            "postmaster": directory.postmaster,
            "default_quota": settings.mailbox_quota,
            "mail_dir": layout.MAIL_DIR,
            "vmail_uid": layout.VMAIL_UID,
            "vmail_gid": layout.VMAIL_GID,
            "output_dir": layout.DIRECTORY_DIR,
            "interval": directory.interval,
            "page_size": PAGE_SIZE,
            "timeout": 10,
        },
        indent=2,
    ) + "\n"
