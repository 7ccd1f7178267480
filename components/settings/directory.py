"""Who has a mailbox: the directory's settings."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, field_validator, model_validator

from components.settings.common import ADDRESS, Strict


class DirectorySettings(Strict):
    """Where the list of mailboxes, aliases, lists and quotas comes from.

    `authentik` (the default): authentik's active users whose email is in
    mail_domain (members of allowed_group when it is set) have mailboxes,
    read every `interval` seconds; everyone else is refused during the SMTP
    dialogue. `open`: every local part of mail_domain is accepted and gets a
    mailbox on first delivery (the catch-all of earlier versions).
    A stack file may say just `directory: open` or `directory: authentik`.
    """

    source: Literal["authentik", "open"] = Field("authentik", description="authentik or open")
    interval: int = Field(60, description="seconds between two reads of authentik's users and groups")
    postmaster: Optional[str] = Field(
        None, description="where mail to postmaster@ and abuse@ of mail_domain goes (RFC 5321, RFC 2142)"
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value not in ("authentik", "open"):
                raise ValueError(f"must be authentik or open (or an object with source, interval, postmaster), got {value!r}")
            return {"source": value}
        return value

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: int) -> int:
        if not 10 <= value <= 86400:
            raise ValueError(f"must be a number of seconds between 10 and 86400, got {value}")
        return value

    @field_validator("postmaster")
    @classmethod
    def _postmaster(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not ADDRESS.match(value):
            raise ValueError(f"must be an email address such as alice@example.com, got {value!r}")
        return None if value is None else value.lower()

    @model_validator(mode="after")
    def _needs_postmaster(self) -> "DirectorySettings":
        if self.source == "authentik" and self.postmaster is None:
            raise ValueError(
                "postmaster is required with source authentik: the mailbox that receives mail to postmaster@ "
                "and abuse@ of mail_domain (RFC 5321, RFC 2142), e.g. directory: {postmaster: alice@example.com}"
            )
        return self
