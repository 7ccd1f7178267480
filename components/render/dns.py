"""The DNS records a mail domain needs, from the settings and the DKIM public keys.

Pure: (settings, public keys) -> records, each {"type", "name", "value"}.
Names are fully qualified without the final dot; values as a DNS provider's
form takes them (a DKIM TXT value longer than 255 characters is split into
several strings by the provider, or by hand in a zone file).
Only public values go in: nothing here may come from a secret.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from typing import Mapping
from urllib.parse import urlsplit

from components.settings import Settings

# Names standing for values only the hosting provider knows.
PUBLIC_IPV4 = "<public IPv4 address of the Docker host>"
PUBLIC_IPV4_REVERSE = "<that address, reversed>.in-addr.arpa"
MTA_STS_MAX_AGE = 604800  # one week, RFC 8461's usual value


def dkim_public_key_base64(public_key_pem: str) -> str:
    """The p= value: the PEM's base64 body (DER SubjectPublicKeyInfo), on one line."""
    lines = [line.strip() for line in public_key_pem.strip().splitlines()]
    if len(lines) < 3 or lines[0] != "-----BEGIN PUBLIC KEY-----" or lines[-1] != "-----END PUBLIC KEY-----":
        raise ValueError("expected a PEM public key (-----BEGIN PUBLIC KEY-----)")
    body = "".join(lines[1:-1])
    base64.b64decode(body, validate=True)
    return body


def dkim_txt_value(public_key_pem: str) -> str:
    return f"v=DKIM1; k=rsa; p={dkim_public_key_base64(public_key_pem)}"


def mta_sts_policy(settings: Settings) -> str:
    """The policy file to serve at https://mta-sts.<mail_domain>/.well-known/mta-sts.txt."""
    return (
        "version: STSv1\n"
        f"mode: {settings.mta_sts_mode}\n"
        f"mx: {settings.host_name}\n"
        f"max_age: {MTA_STS_MAX_AGE}\n"
    )


def mta_sts_policy_url(settings: Settings) -> str:
    return f"https://mta-sts.{settings.mail_domain}/.well-known/mta-sts.txt"


def _public_address(settings: Settings) -> ipaddress.IPv4Address | None:
    address = ipaddress.ip_address(settings.publish_address)
    return address if isinstance(address, ipaddress.IPv4Address) and address.is_global else None


def _client_discovery(settings: Settings) -> list[dict[str, str]]:
    """Where mail clients find the servers: RFC 6186 SRV records (priority weight
    port target; a target of "." says a service is not offered) and the
    autoconfig name Thunderbird asks (served by Roundcube's web server)."""
    domain, host = settings.mail_domain, settings.host_name
    offered = {"_imaps._tcp": settings.ports.imaps, "_submission._tcp": settings.ports.submission}
    records = [
        {"type": "SRV", "name": f"{service}.{domain}", "value": f"0 1 {port} {host}." if port else "0 0 0 ."}
        for service, port in offered.items()
    ]
    # Plain IMAP is never offered to clients outside the host (RFC 6186 5.1: "." means none).
    records.append({"type": "SRV", "name": f"_imap._tcp.{domain}", "value": "0 0 0 ."})
    webmail_host = urlsplit(settings.roundcube_url).hostname or host
    records.append({"type": "CNAME", "name": f"autoconfig.{domain}", "value": f"{webmail_host}."})
    return records


def dns_records(settings: Settings, dkim_public_keys: Mapping[str, str]) -> list[dict[str, str]]:
    """Every record to publish for mail_domain; dkim_public_keys maps selector -> PEM public key."""
    domain, host = settings.mail_domain, settings.host_name
    address = _public_address(settings)
    include = f" include:{settings.spf_include}" if settings.spf_include else ""
    records = [
        {"type": "MX", "name": domain, "value": f"10 {host}"},
        {"type": "A", "name": host, "value": str(address) if address else PUBLIC_IPV4},
        # Envelope senders @mail_domain, and the HELO name (bounces have no sender).
        {"type": "TXT", "name": domain, "value": f"v=spf1 mx{include} -all"},
        {"type": "TXT", "name": host, "value": f"v=spf1 a{include} -all"},
    ]
    for selector in settings.dkim_selectors:
        records.append(
            {"type": "TXT", "name": f"{selector}._domainkey.{domain}", "value": dkim_txt_value(dkim_public_keys[selector])}
        )
    dmarc = f"v=DMARC1; p={settings.dmarc_policy}"
    if settings.report_address:
        dmarc += f"; rua=mailto:{settings.report_address}"
    records.append({"type": "TXT", "name": f"_dmarc.{domain}", "value": dmarc})
    # Set by whoever owns the address (the hosting provider), not in your zone.
    records.append(
        {"type": "PTR", "name": address.reverse_pointer if address else PUBLIC_IPV4_REVERSE, "value": host}
    )
    if settings.clients.app_passwords:
        records += _client_discovery(settings)
    if settings.tls is not None:
        policy_id = hashlib.sha256(mta_sts_policy(settings).encode()).hexdigest()[:16]
        records.append({"type": "TXT", "name": f"_mta-sts.{domain}", "value": f"v=STSv1; id={policy_id}"})
        if settings.report_address:
            records.append(
                {"type": "TXT", "name": f"_smtp._tls.{domain}", "value": f"v=TLSRPTv1; rua=mailto:{settings.report_address}"}
            )
    return records
