"""The mail host's TLS certificate, as files on the Docker host."""

from __future__ import annotations

from typing import Optional

from pydantic import field_validator

from components.settings.common import Strict


class TlsFiles(Strict):
    """PEM certificate chain and key for mail_hostname, as files on the Docker host.

    They are mounted read-only into Dovecot and Postfix (e.g. certbot's
    /etc/letsencrypt/live/<name>/fullchain.pem and privkey.pem), so the private
    key never passes through Pulumi's state.
    """

    cert_file: str
    key_file: str
    # Only for a certificate from a private CA: Roundcube checks Dovecot's and
    # Postfix's certificate against it on the private network (STARTTLS).
    # Unset: the system's CAs (a public CA such as Let's Encrypt).
    ca_file: Optional[str] = None

    @field_validator("cert_file", "key_file", "ca_file")
    @classmethod
    def _absolute(cls, path: Optional[str]) -> Optional[str]:
        if path is not None and (not path.startswith("/") or "\n" in path or ".." in path.split("/")):
            raise ValueError(f"must be an absolute path on the Docker host, got {path!r}")
        return path


