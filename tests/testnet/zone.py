"""The test network's DNS zone and receiving SMTP server (image: tests/testnet/Dockerfile).

Every container of a test stack that looks names up (Postfix, OpenDKIM) gets
this dnsmasq as its only upstream resolver (Docker's `dns` option: Docker's
embedded resolver answers the network's aliases and forwards every other
name there, and nowhere else). dnsmasq runs with no upstream server and no
hosts file: it answers the records given here and refuses everything else,
so no query made by a test leaves the test network.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

import docker

HERE = Path(__file__).resolve().parent
DNSMASQ_CONF = "/etc/dnsmasq.d/zone.conf"
RECEIVER_MAILDIR = "/srv/mail"
_NAME = re.compile(r"^([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")


def build_image(client: docker.DockerClient, tag: str, base_image: str = "debian:trixie-slim") -> str:
    client.images.build(path=str(HERE), tag=tag, buildargs={"BASE_IMAGE": base_image}, pull=False, rm=True, forcerm=True)
    return tag


def _chunks(value: str, size: int = 255) -> list[str]:
    return [value[i:i + size] for i in range(0, len(value), size)]


def dnsmasq_conf(records: Iterable[dict[str, str]]) -> str:
    """dnsmasq lines serving records ({type, name, value}); names that are not DNS names are skipped
    (dns_records' stand-ins for addresses only the hosting provider knows)."""
    lines = ["no-resolv", "no-hosts", "no-poll", "keep-in-foreground", "log-queries", "log-facility=-"]
    for record in records:
        name = record["name"]
        if not _NAME.match(name):
            continue
        if record["type"] == "TXT":
            # One TXT record of several strings, each at most 255 characters (RFC 1035).
            strings = ",".join(f'"{chunk}"' for chunk in _chunks(record["value"]))
            lines.append(f"txt-record={name},{strings}")
        elif record["type"] == "MX":
            preference, host = record["value"].split()
            lines.append(f"mx-host={name},{host},{preference}")
        elif record["type"] == "A" and re.match(r"^\d+\.\d+\.\d+\.\d+$", record["value"]):
            lines.append(f"host-record={name},{record['value']}")
    return "\n".join(lines) + "\n"


DNS_COMMAND = ["dnsmasq", f"--conf-file={DNSMASQ_CONF}"]
# The receiving SMTP server: sink.py uploaded to RECEIVER_DIR, run from there.
RECEIVER_DIR = "/srv"
RECEIVER_SINK = f"{RECEIVER_DIR}/sink.py"
RECEIVER_COMMAND = ["python3", "-m", "aiosmtpd", "-n", "-l", "0.0.0.0:25", "-c", "sink.RawMaildir", RECEIVER_MAILDIR]


def sink_source() -> bytes:
    return (HERE / "sink.py").read_bytes()
