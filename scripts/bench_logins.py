"""Benchmark: how fast the deployed stack logs users in with OAuth2 tokens.

    .venv/bin/python scripts/bench_logins.py [--logins 60] [--clients 1 4]

Deploys the end-to-end stack (the program's declared containers and the
authentik stand-in; a Docker engine must be running, see scripts/test.sh),
then prints:

- the time to deploy (images already built or not, as it finds them);
- IMAP logins per second over IMAPS with XOAUTH2, for each client count, each
  login a new TLS connection and one introspection call to the stand-in;
- submission logins per second (STARTTLS + AUTH XOAUTH2 + QUIT).

Every request goes to 127.0.0.1; every loop has a fixed count; the stack is
removed at the end. Numbers depend on the machine and on the stand-in (a
Flask server), not on a real authentik: compare runs on one machine.
"""

from __future__ import annotations

import argparse
import smtplib
import ssl
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import docker  # noqa: E402

from tests.e2e import mailclients  # noqa: E402
from tests.e2e.environment import (  # noqa: E402
    AUTH_URL, MAIL_DOMAIN, MAIL_HOST, PORTS, make_pki, names_on_loopback, running_stack,
)
from tests.e2e.standin import client as idp  # noqa: E402


def imap_logins(stack, token: str, user: str, count: int) -> list[float]:
    durations = []
    for _ in range(count):
        start = time.perf_counter()
        mailclients.imap_login(MAIL_HOST, PORTS["imaps"], stack.ca_file, user, token).logout()
        durations.append(time.perf_counter() - start)
    return durations


def submission_logins(stack, token: str, user: str, count: int) -> list[float]:
    context = ssl.create_default_context(cafile=str(stack.ca_file))
    durations = []
    for _ in range(count):
        start = time.perf_counter()
        with smtplib.SMTP(MAIL_HOST, PORTS["submission"], timeout=30) as smtp:
            smtp.ehlo()
            smtp.starttls(context=context)
            smtp.ehlo()
            code, _ = smtp.auth("XOAUTH2", lambda challenge=None: "" if challenge else mailclients.xoauth2(user, token))
            # smtplib also returns 503 ("already authenticated", or no EHLO) without raising.
            if code != 235:
                raise RuntimeError(f"submission login not accepted: {code}")
        durations.append(time.perf_counter() - start)
    return durations


def introspections(stack) -> int:
    return stack.logs("authentik").count("POST /application/o/introspect/")


def report(name: str, clients: int, total: int, wall: float, durations: list[float], calls: int) -> None:
    durations.sort()
    p95 = durations[int(len(durations) * 0.95) - 1]
    print(
        f"{name:<20} clients={clients:<2} logins={total:<4} {total / wall:6.1f}/s  "
        f"median {statistics.median(durations) * 1000:6.1f} ms  p95 {p95 * 1000:6.1f} ms  "
        f"max {durations[-1] * 1000:7.1f} ms  introspections/login {calls / total:.2f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logins", type=int, default=60, help="logins per client (bounded)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    if args.logins > 1000 or max(args.clients) > 16:
        parser.error("bounded load: at most 1000 logins per client and 16 clients")

    engine = docker.from_env(timeout=600)
    with tempfile.TemporaryDirectory() as folder, names_on_loopback():
        start = time.perf_counter()
        with running_stack(engine, make_pki(Path(folder)), access_token_seconds=900) as stack:
            print(f"deploy (capture, builds, containers, stand-in): {time.perf_counter() - start:.1f} s")
            user = f"bob@{MAIL_DOMAIN}"
            # One token per client: authentik hands each session its own.
            for clients in args.clients:
                tokens = [
                    idp.login_and_get_tokens(
                        AUTH_URL, stack.client_id, stack.client_secret, stack.redirect_uri, "bob", "bob-pw",
                        verify=str(stack.ca_file),
                    )["access_token"]
                    for _ in range(clients)
                ]
                for name, measure in (("IMAPS XOAUTH2", imap_logins), ("submission XOAUTH2", submission_logins)):
                    calls_before = introspections(stack)
                    begin = time.perf_counter()
                    with ThreadPoolExecutor(clients) as pool:
                        runs = list(pool.map(lambda t: measure(stack, t, user, args.logins), tokens))
                    wall = time.perf_counter() - begin
                    calls = introspections(stack) - calls_before
                    report(name, clients, clients * args.logins, wall, [d for run in runs for d in run], calls)
    return 0


if __name__ == "__main__":
    sys.exit(main())
