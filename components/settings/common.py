"""Pieces every settings module shares: the strict base model and the value checks."""

from __future__ import annotations

import ipaddress
import re

from pydantic import BaseModel, ConfigDict

# authentik parses lifetimes as `key=value;key=value` timedelta arguments.
VALIDITY_UNITS = ("weeks", "days", "hours", "minutes", "seconds")
VALIDITY_PART = re.compile(r"^(%s)=(\d+(?:\.\d+)?)$" % "|".join(VALIDITY_UNITS))
DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,49}$")
IMAGE_REF = re.compile(r"^[a-z0-9][a-z0-9._/:@-]*$")
STAMP = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
SIZE = re.compile(r"^[1-9][0-9]{0,5}[MGT]$")
RELAY = re.compile(r"^(\[[a-z0-9.-]+\]|[a-z0-9.-]+)(:\d{1,5})?$")
# A DKIM selector is one DNS label (RFC 6376 3.1): <selector>._domainkey.<domain>.
SELECTOR = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
# A DNSBL zone for postscreen, optionally with a weight: zen.spamhaus.org*2.
DNSBL = re.compile(r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}(\*-?\d{1,2})?$")
ADDRESS = re.compile(r"^[A-Za-z0-9._%+-]+@([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
# The default DKIM selector: short and dated (year and month the key was
# introduced). Rotation is a change of selector; see the README.
DEFAULT_DKIM_SELECTOR = "s202612"


class SettingsError(ValueError):
    """Raised with one line per bad setting, each naming the setting."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def ip_address_text(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"must be an IP address of the Docker host (e.g. 127.0.0.1 or 0.0.0.0), got {value!r}") from None




def validity_seconds(value: str) -> float:
    """Seconds in an authentik lifetime such as `hours=1;minutes=30`."""
    total = 0.0
    factors = {"weeks": 604800, "days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}
    for part in value.split(";"):
        match = VALIDITY_PART.match(part.strip())
        if not match:
            raise ValueError(
                f"must be authentik lifetime syntax like 'minutes=10' or 'hours=1;minutes=30' "
                f"(units: {', '.join(VALIDITY_UNITS)}), got {value!r}"
            )
        total += float(match.group(2)) * factors[match.group(1)]
    return total
