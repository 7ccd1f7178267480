"""Where the services are published on the Docker host: ports and addresses."""

from __future__ import annotations

from typing import Any, Optional

from pydantic import Field, field_validator

from components.settings.common import Strict, ip_address_text


class Ports(Strict):
    """Host ports to publish (each on its `publish_addresses` entry); null leaves a service unpublished."""

    http: int = Field(8080, description="Roundcube's HTTP port (put your TLS proxy in front of it)")
    smtp: Optional[int] = Field(25, description="inbound mail (MX) for mail_domain")
    submission: Optional[int] = Field(587, description="mail clients sending with XOAUTH2/OAUTHBEARER")
    imaps: Optional[int] = Field(None, description="IMAP over TLS for mail clients; needs tls")
    imap: Optional[int] = Field(None, description="plain IMAP; only on a loopback address")

    @field_validator("*")
    @classmethod
    def _port_range(cls, value: Optional[int], info: Any) -> Optional[int]:
        if value is not None and not 1 <= value <= 65535:
            raise ValueError(f"must be a port between 1 and 65535, got {value}")
        return value


class PublishAddresses(Strict):
    """Per port, the Docker host address it is published on.

    Roundcube's plain HTTP defaults to loopback, for a TLS proxy on the same
    host: published ports bypass host firewalls such as ufw. A mail port left
    unset (or "") uses `publish_address`.
    """

    http: str = Field("127.0.0.1", description="Roundcube's plain HTTP; keep it behind your TLS proxy")
    smtp: Optional[str] = None
    submission: Optional[str] = None
    imaps: Optional[str] = None
    imap: Optional[str] = None

    @field_validator("*", mode="before")
    @classmethod
    def _address(cls, value: Any) -> Any:
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise ValueError(f"must be an IP address of the Docker host (e.g. 127.0.0.1 or 0.0.0.0), got {value!r}")
        return ip_address_text(value)


