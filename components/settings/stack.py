"""The stack's settings: one typed model, validated before any resource exists.

Field names are the keys of the stack file (`roundcube-authentik:<field>`).
Every error names the setting and what is allowed, so `pulumi preview` stops
with a sentence a self-hoster can act on instead of a half-registered graph.
Each concern's own model lives beside this one (network, limits, tls, ...);
components/settings/reader.py turns what the Pulumi CLI hands over into them.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal, Optional
from urllib.parse import urlsplit

from pydantic import Field, PrivateAttr, field_validator, model_validator

from components.settings.common import (
    ADDRESS,
    DEFAULT_DKIM_SELECTOR,
    DNSBL,
    DOMAIN,
    IMAGE_REF,
    RELAY,
    SELECTOR,
    SIZE,
    SLUG,
    STAMP,
    Strict,
    ip_address_text,
    validity_seconds,
)
from components.settings.clients import ClientSettings
from components.settings.deployment import SwarmSettings
from components.settings.directory import DirectorySettings
from components.settings.limits import MemoryLimits, ProcessLimits
from components.settings.network import Ports, PublishAddresses
from components.settings.tls import TlsFiles


class Settings(Strict):
    """Everything a stack says about its webmail. See the README's settings reference."""

    dev: bool = Field(False, description="a development stack: allows http:// URLs")
    mail_domain: str
    mail_hostname: Optional[str] = Field(None, description="defaults to mail.<mail_domain>")
    roundcube_url: str
    authentik_url: str
    authentik_internal_url: Optional[str] = Field(
        None, description="how the containers reach authentik, when not by authentik_url"
    )
    authentik_ca_file: Optional[Path] = Field(None, description="PEM CA that signed authentik's certificate")
    app_name: str = "Webmail"
    app_slug: str = "webmail"
    authorization_flow: str = "default-provider-authorization-implicit-consent"
    invalidation_flow: str = "default-provider-invalidation-flow"
    signing_key: str = "authentik Self-signed Certificate"
    allowed_group: Optional[str] = None
    access_token_validity: str = "minutes=10"
    refresh_token_validity: str = "days=30"
    docker_host: str = "unix:///var/run/docker.sock"
    publish_address: str = "127.0.0.1"
    publish_addresses: PublishAddresses = PublishAddresses()
    ports: Ports = Ports()
    memory_mb: MemoryLimits = MemoryLimits()
    pids_limit: ProcessLimits = ProcessLimits()
    mailbox_quota: str = Field("5G", description="storage per mailbox: a number and M, G or T, e.g. 500M, 5G")
    relay_host: Optional[str] = None
    base_image: str = "debian:trixie-slim"
    image_rebuild: Optional[str] = Field(
        None, description="any new value (e.g. today's date) rebuilds the images from current Debian packages"
    )
    protect_volumes: bool = True
    tls: Optional[TlsFiles] = None
    # -- mail the internet accepts (DKIM, SPF, DMARC, inbound checks) -----------
    dkim_selector: str = Field(DEFAULT_DKIM_SELECTOR, description="selector of the key that signs outgoing mail")
    dkim_extra_selectors: list[str] = Field(
        default_factory=list,
        description="selectors whose keys are kept and listed in dns_records without signing (key rotation)",
    )
    dmarc_policy: str = Field("quarantine", description="DMARC p=: none, quarantine or reject")
    report_address: Optional[str] = Field(None, description="mailbox for DMARC aggregate and TLS-RPT reports")
    mta_sts_mode: str = Field("testing", description="MTA-STS policy mode (with tls): testing or enforce")
    relay_spf_include: Optional[str] = Field(None, description="SPF include: for relay_host; default its host name")
    dnsbl_sites: list[str] = Field(default_factory=list, description="postscreen DNSBL zones; empty: no DNSBL query")
    token_validation: Literal["local", "introspection"] = Field(
        "local",
        description="local: Dovecot checks each token's signature with authentik's published keys "
        "(no authentik call per login; a revoked token works until it expires); introspection: "
        "authentik is asked on every login",
    )
    jwks_refresh_seconds: int = Field(
        60, description="local token validation: how often Dovecot's container fetches authentik's keys"
    )
    # Required: its default source, authentik, needs a postmaster mailbox, so
    # a stack chooses (see reader.HINTS for what the error message adds).
    directory: DirectorySettings = Field(description="who has a mailbox: authentik (needs postmaster) or open")
    clients: ClientSettings = Field(ClientSettings(), description="mail clients' app passwords")
    deployment: Literal["containers", "swarm"] = Field(
        "containers", description="containers on docker_host, or services on the Docker Swarm docker_host manages"
    )
    roundcube_replicas: Optional[int] = Field(
        None, description="Roundcube replicas (deployment: swarm; default 2), sharing sessions through PostgreSQL"
    )
    swarm: SwarmSettings = SwarmSettings()

    _authentik_ca_pem: Optional[str] = PrivateAttr(None)

    # -- single fields -------------------------------------------------------

    @field_validator("jwks_refresh_seconds")
    @classmethod
    def _refresh(cls, value: int) -> int:
        if not 5 <= value <= 86400:
            raise ValueError(f"must be a number of seconds between 5 and 86400, got {value}")
        return value

    @field_validator("mail_domain", "mail_hostname")
    @classmethod
    def _domain(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return value
        value = value.lower()
        if not DOMAIN.match(value):
            raise ValueError(f"must be a DNS name such as example.com, got {value!r}")
        return value

    @field_validator("roundcube_url", "authentik_url", "authentik_internal_url")
    @classmethod
    def _site_url(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http(s):// URL such as https://mail.example.com, got {value!r}")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError(f"must have no user, query or fragment, got {value!r}")
        if parts.path not in ("", "/"):
            raise ValueError(f"must be the site root (served at /), got path {parts.path!r}")
        return f"{parts.scheme}://{parts.netloc}"

    @field_validator("app_slug")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not SLUG.match(value):
            raise ValueError(f"must be lower-case letters, digits, '-' or '_' (authentik slug), got {value!r}")
        return value

    @field_validator("app_name", "authorization_flow", "invalidation_flow", "signing_key", "allowed_group")
    @classmethod
    def _not_blank(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("access_token_validity", "refresh_token_validity")
    @classmethod
    def _validity(cls, value: str) -> str:
        seconds = validity_seconds(value)
        if seconds <= 0:
            raise ValueError(f"must be longer than zero, got {value!r}")
        return value

    @field_validator("docker_host")
    @classmethod
    def _docker_host(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in ("unix", "ssh") or value in ("unix://", "ssh://"):
            raise ValueError(f"must be unix:///path/to/docker.sock or ssh://user@host, got {value!r}")
        return value

    @field_validator("publish_address")
    @classmethod
    def _address(cls, value: str) -> str:
        return ip_address_text(value)

    @field_validator("relay_host")
    @classmethod
    def _relay(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not RELAY.match(value.lower()):
            raise ValueError(f"must be a Postfix relayhost such as [smtp.example.net]:587, got {value!r}")
        return value

    @field_validator("mailbox_quota")
    @classmethod
    def _quota(cls, value: str) -> str:
        if not SIZE.match(value):
            raise ValueError(f"must be a size in whole M, G or T such as 500M, 5G or 1T, got {value!r}")
        return value

    @field_validator("image_rebuild", mode="before")
    @classmethod
    def _stamp(cls, value: Any) -> Any:
        if value is None or value == "":
            return None
        if not isinstance(value, str) or not STAMP.match(value):
            raise ValueError(
                f"must be a short stamp of letters, digits, '.', '_', ':' or '-' such as 2026-12-01, got {value!r}"
            )
        return value

    @field_validator("base_image")
    @classmethod
    def _image(cls, value: str) -> str:
        if not IMAGE_REF.match(value):
            raise ValueError(f"must be an image reference such as debian:trixie-slim, got {value!r}")
        return value

    @model_validator(mode="after")
    def _read_ca_once(self) -> "Settings":
        # A path on the machine that runs `pulumi` (relative: to the project
        # folder, where pulumi runs the program). Read here, once: the
        # containers get this text, whatever happens to the file afterwards.
        if self.authentik_ca_file is not None:
            self._authentik_ca_pem = _pem_text(self.authentik_ca_file)
        return self

    @field_validator("dkim_selector")
    @classmethod
    def _selector(cls, value: str) -> str:
        if not SELECTOR.match(value):
            raise ValueError(f"must be one DNS label of lower-case letters, digits and '-' (e.g. s202612), got {value!r}")
        return value

    @field_validator("dkim_extra_selectors")
    @classmethod
    def _selectors(cls, value: list[str]) -> list[str]:
        for selector in value:
            if not SELECTOR.match(selector):
                raise ValueError(f"each must be one DNS label of lower-case letters, digits and '-', got {selector!r}")
        if len(set(value)) != len(value):
            raise ValueError(f"must not repeat a selector, got {value}")
        return value

    @field_validator("dmarc_policy")
    @classmethod
    def _dmarc(cls, value: str) -> str:
        if value not in ("none", "quarantine", "reject"):
            raise ValueError(f"must be none, quarantine or reject, got {value!r}")
        return value

    @field_validator("mta_sts_mode")
    @classmethod
    def _mta_sts(cls, value: str) -> str:
        if value not in ("testing", "enforce"):
            raise ValueError(f"must be testing or enforce, got {value!r}")
        return value

    @field_validator("report_address")
    @classmethod
    def _report_address(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not ADDRESS.match(value):
            raise ValueError(f"must be an email address such as dmarc-reports@example.com, got {value!r}")
        return value

    @field_validator("relay_spf_include")
    @classmethod
    def _spf_include(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not DOMAIN.match(value.lower()):
            raise ValueError(f"must be a DNS name such as spf.relay.example.net, got {value!r}")
        return None if value is None else value.lower()

    @field_validator("dnsbl_sites")
    @classmethod
    def _dnsbl(cls, value: list[str]) -> list[str]:
        for site in value:
            if not DNSBL.match(site):
                raise ValueError(f"each must be a DNSBL zone, optionally weighted (zen.spamhaus.org*2), got {site!r}")
        return value

    # -- rules across fields -------------------------------------------------

    @model_validator(mode="after")
    def _coherent(self) -> "Settings":
        problems = []
        if not self.dev:
            for field in ("roundcube_url", "authentik_url", "authentik_internal_url"):
                url = getattr(self, field)
                if url is not None and not url.startswith("https://"):
                    problems.append(f"{field} must be https:// in a stack that is not marked dev: true, got {url}")
        published = {name: port for name, port in self.ports.model_dump().items() if port is not None}
        seen: dict[int, str] = {}
        for name, port in published.items():
            if port in seen:
                problems.append(f"ports.{name} and ports.{seen[port]} both use port {port}; each needs its own")
            seen[port] = name
        if self.ports.imaps is not None and self.tls is None:
            problems.append("ports.imaps needs tls (cert_file and key_file); set tls or set ports.imaps to null")
        if self.ports.imap is not None and not ipaddress.ip_address(self.address_of("imap")).is_loopback:
            problems.append(
                f"ports.imap (plain IMAP) may only be published on a loopback address, "
                f"got {self.address_of('imap')}; use ports.imaps with tls"
            )
        submission = self.address_of("submission")
        if self.ports.submission is not None and self.tls is None and not ipaddress.ip_address(submission).is_loopback:
            problems.append(
                f"ports.submission on {submission} needs tls: tokens would cross the network "
                "in clear; set tls or publish on 127.0.0.1"
            )
        loopback = ipaddress.ip_address(self.publish_address).is_loopback
        if not loopback:
            if self.ports.imap is not None:
                problems.append(
                    f"ports.imap (plain IMAP) may only be published on a loopback publish_address, "
                    f"got {self.publish_address}; use ports.imaps with tls"
                )
            if self.ports.submission is not None and self.tls is None:
                problems.append(
                    f"ports.submission on {self.publish_address} needs tls: tokens would cross the network "
                    "in clear; set tls or publish on 127.0.0.1"
                )
        if self.dkim_selector in self.dkim_extra_selectors:
            problems.append(
                f"dkim_extra_selectors repeats dkim_selector {self.dkim_selector!r}; list only the other selectors"
            )
        if self.relay_spf_include is not None and self.relay_host is None:
            problems.append("relay_spf_include needs relay_host; set relay_host or leave relay_spf_include unset")
        if self.roundcube_replicas is not None and not 1 <= self.roundcube_replicas <= 20:
            problems.append(f"roundcube_replicas must be between 1 and 20, got {self.roundcube_replicas}")
        elif self.roundcube_replicas not in (None, 1) and self.deployment != "swarm":
            problems.append(
                f"roundcube_replicas {self.roundcube_replicas} needs deployment: swarm; containers run one Roundcube"
            )
        if self.deployment == "swarm":
            # Host-mode published ports bind every address of the node (Swarm has no per-address binding).
            for name in ("http", "smtp", "submission", "imaps", "imap"):
                if getattr(self.ports, name) is not None and self.address_of(name) != "0.0.0.0":
                    problems.append(
                        f"ports.{name} on {self.address_of(name)}: deployment: swarm publishes ports on every address "
                        f"of the node; set publish_addresses.{name} (or publish_address) to 0.0.0.0 and keep a "
                        "firewall in front, or set the port to null"
                    )
            if self.ports.imap is not None:
                problems.append("ports.imap (plain IMAP) cannot be published with deployment: swarm (every address)")
        if self.clients.app_passwords:
            if self.tls is None:
                problems.append("clients.app_passwords needs tls: app passwords are only ever accepted over TLS")
            if self.directory.source != "authentik":
                problems.append(
                    "clients.app_passwords needs directory.source authentik: a mail client logs in with its "
                    "address, which the directory maps to the authentik user whose app password it is"
                )
            if self.ports.imaps is None and self.ports.submission is None:
                problems.append("clients.app_passwords needs ports.imaps or ports.submission: no port for mail clients")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # -- derived values -------------------------------------------------------

    def address_of(self, port: str) -> str:
        """The host address a port (a key of `ports`) is published on."""
        return getattr(self.publish_addresses, port) or self.publish_address

    @property
    def webmail_replicas(self) -> int:
        """How many Roundcube copies run: one in containers, roundcube_replicas (default 2) in a swarm."""
        if self.deployment != "swarm":
            return 1
        return 2 if self.roundcube_replicas is None else self.roundcube_replicas

    @property
    def authentik_ca_pem(self) -> Optional[str]:
        """The text of authentik_ca_file, as read when the settings were loaded."""
        return self._authentik_ca_pem

    @property
    def host_name(self) -> str:
        return self.mail_hostname or f"mail.{self.mail_domain}"

    @property
    def authentik_backchannel_url(self) -> str:
        """Where Roundcube and Dovecot send token, userinfo and introspection requests."""
        return self.authentik_internal_url or self.authentik_url

    @property
    def dkim_selectors(self) -> list[str]:
        """Every selector with a key: the signing one first."""
        return [self.dkim_selector, *self.dkim_extra_selectors]

    @property
    def spf_include(self) -> Optional[str]:
        """The domain whose SPF record covers relay_host, when mail leaves through it."""
        if self.relay_spf_include is not None:
            return self.relay_spf_include
        if self.relay_host is None:
            return None
        return self.relay_host.lower().split("]")[0].lstrip("[").split(":")[0]

    @property
    def token_issuers(self) -> list[str]:
        """Every `iss` authentik puts into this stack's tokens.

        authentik builds the issuer from the Host of the token request: tokens
        that Roundcube (and Dovecot's neighbours) fetch through
        authentik_internal_url carry that URL, tokens a mail client gets
        through authentik_url carry the public one.
        """
        bases = [self.authentik_url] + ([self.authentik_internal_url] if self.authentik_internal_url else [])
        return list(dict.fromkeys(f"{_without_default_port(url)}/application/o/{self.app_slug}/" for url in bases))

    @property
    def jwks_url(self) -> str:
        """The provider's published signing keys, fetched over the back channel."""
        return f"{self.authentik_backchannel_url}/application/o/{self.app_slug}/jwks/"

    @property
    def redirect_uri(self) -> str:
        # What Roundcube 1.6 really sends (rcmail_oauth::get_redirect_uri).
        return f"{self.roundcube_url}/index.php/login/oauth"


def _without_default_port(url: str) -> str:
    # A client leaves the default port out of Host, so authentik's `iss` has none.
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}[parts.scheme]
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" if parts.port in (None, default) else f"{parts.scheme}://{host}:{parts.port}"


def _pem_text(path: Path) -> str:
    where = f"{str(path)!r}" if path.is_absolute() else f"{str(path)!r} (relative to {Path.cwd()})"
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise ValueError(
            f"authentik_ca_file must be a readable PEM file on the machine that runs pulumi, cannot read {where}: {reason}"
        ) from None
    if "-----BEGIN " not in text:
        raise ValueError(f"authentik_ca_file must be a PEM file, {where} has no '-----BEGIN' block")
    return text
