"""How mail clients other than Roundcube log in: authentik app passwords."""

from __future__ import annotations

from pydantic import Field, field_validator

from components.settings.common import Strict


class ClientSettings(Strict):
    """Thunderbird and phone mail apps log in with an address and an authentik app password.

    Offered only over TLS (IMAPS, submission after STARTTLS), checked with
    authentik by a helper in Dovecot's container; a success is remembered for
    `cache_seconds`, so a deleted app password or a deactivated user's phone
    stops within that long (the directory refuses a deactivated user at its
    next round).
    """

    app_passwords: bool = Field(False, description="accept authentik app passwords (PLAIN/LOGIN over TLS)")
    cache_seconds: int = Field(60, description="how long a successful app-password check is remembered")

    @field_validator("cache_seconds")
    @classmethod
    def _cache(cls, value: int) -> int:
        if not 0 <= value <= 3600:
            raise ValueError(f"must be a number of seconds between 0 (no cache) and 3600, got {value}")
        return value
