"""What mail clients need to find the server by themselves (clients.app_passwords).

- Thunderbird's autoconfig file (`config-v1.1.xml`, the format of
  https://wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat),
  which Roundcube's web server serves at
  `<roundcube_url>/.well-known/autoconfig/mail/config-v1.1.xml` and, for a
  TLS proxy that sends `autoconfig.<mail_domain>` to it, at
  `/mail/config-v1.1.xml`;
- an Apple configuration profile (iOS, iPadOS, macOS Mail) at
  `<roundcube_url>/mail.mobileconfig`: it names the servers and asks for the
  address and the app password when it is installed.

The user types only their address and an app password: IMAP over TLS and
submission with STARTTLS, the password sent only inside TLS.
"""

from __future__ import annotations

import plistlib
import uuid
from xml.sax.saxutils import escape

from components.settings import Settings

# Stable identifiers: installing the profile again replaces it instead of adding a second account.
_PROFILE_NAMESPACE = uuid.UUID("5b0e0b3c-7d2e-4d5c-9a51-2f0f3c6f0a11")


def _servers(settings: Settings) -> tuple[int | None, int | None]:
    return settings.ports.imaps, settings.ports.submission


def render_autoconfig_xml(settings: Settings) -> str:
    imaps, submission = _servers(settings)
    host = escape(settings.host_name)
    domain = escape(settings.mail_domain)
    incoming = [
        '    <incomingServer type="imap">',
        f"      <hostname>{host}</hostname>",
        f"      <port>{imaps}</port>",
        "      <socketType>SSL</socketType>",
        "      <username>%EMAILADDRESS%</username>",
        "      <authentication>password-cleartext</authentication>",
        "    </incomingServer>",
    ] if imaps else []
    outgoing = [
        '    <outgoingServer type="smtp">',
        f"      <hostname>{host}</hostname>",
        f"      <port>{submission}</port>",
        "      <socketType>STARTTLS</socketType>",
        "      <username>%EMAILADDRESS%</username>",
        "      <authentication>password-cleartext</authentication>",
        "    </outgoingServer>",
    ] if submission else []
    return "\n".join([
        '<?xml version="1.0" encoding="UTF-8"?>',
        "<!-- Rendered by roundcube-authentik (components/render/clients.py). The password is",
        "     an authentik app password; it is only ever sent inside TLS. -->",
        '<clientConfig version="1.1">',
        f'  <emailProvider id="{domain}">',
        f"    <domain>{domain}</domain>",
        f"    <displayName>{escape(settings.app_name)}</displayName>",
        f"    <displayShortName>{escape(settings.app_name)}</displayShortName>",
        *incoming,
        *outgoing,
        "  </emailProvider>",
        "</clientConfig>",
        "",
    ])


def render_mobileconfig(settings: Settings) -> bytes:
    """An unsigned configuration profile with one IMAP account; the device asks for the address and password."""
    imaps, submission = _servers(settings)
    account = {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{_reverse(settings.mail_domain)}.mail.account",
        "PayloadUUID": str(uuid.uuid5(_PROFILE_NAMESPACE, f"{settings.mail_domain}/account")).upper(),
        "PayloadDisplayName": settings.app_name,
        "EmailAccountDescription": settings.app_name,
        "EmailAccountType": "EmailTypeIMAP",
        "IncomingMailServerHostName": settings.host_name,
        "IncomingMailServerPortNumber": imaps or 993,
        "IncomingMailServerUseSSL": True,
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingMailServerHostName": settings.host_name,
        "OutgoingMailServerPortNumber": submission or 587,
        "OutgoingMailServerUseSSL": True,
        "OutgoingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingPasswordSameAsIncomingPassword": True,
    }
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{_reverse(settings.mail_domain)}.mail",
        "PayloadUUID": str(uuid.uuid5(_PROFILE_NAMESPACE, settings.mail_domain)).upper(),
        "PayloadDisplayName": f"{settings.app_name} mail",
        "PayloadDescription": f"Mail for {settings.mail_domain}: sign in with your address and an authentik app password.",
        "PayloadRemovalDisallowed": False,
        "PayloadContent": [account],
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML, sort_keys=True)


def _reverse(domain: str) -> str:
    return ".".join(reversed(domain.split(".")))
