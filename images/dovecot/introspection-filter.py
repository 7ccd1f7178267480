#!/usr/bin/python3
"""Passes Dovecot's introspection requests to authentik, access tokens only.

authentik's introspection endpoint answers `active: true` for refresh tokens
too (it looks up access tokens, then refresh tokens, with the same answer and
no token type), so with introspection alone a 30-day refresh token would be a
mail password. Dovecot 2.4.1 cannot combine its local JWT check with
introspection (`introspection_mode = local` never calls out, whatever
force_introspection and introspection_url say), so this filter, on the
container's loopback, sits between the two:

- a token that is not a JWT (authentik's refresh tokens are opaque random
  strings, its access tokens always JWTs) gets `{"active": false}` at once;
- anything else is forwarded unchanged (body and HTTP Basic credentials) to
  authentik's introspection endpoint, whose answer goes back to Dovecot as is.
  authentik down means no answer: Dovecot fails the login (fail closed).

    introspection-filter.py CONFIG    returns once listening; serves in the background

CONFIG is the JSON file the Pulumi program renders (components/render/dovecot.py,
render_introspection_filter_config). Never logs a token or a credential.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MAX_BODY = 64 * 1024
INACTIVE = b'{"active": false}'


def log(message: str) -> None:
    print(f"introspection-filter: {message}", file=sys.stderr, flush=True)


def is_jwt(token: str) -> bool:
    """Three base64url parts whose first is a JSON header naming an algorithm."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        return False
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except (ValueError, binascii.Error):
        return False
    return isinstance(header, dict) and isinstance(header.get("alg"), str) and header["alg"].lower() != "none"


def make_handler(config: dict) -> type[BaseHTTPRequestHandler]:
    ca_file = config.get("ca_file")
    context = ssl.create_default_context(cafile=ca_file or None, capath=None if ca_file else config.get("ca_dir"))
    upstream = config["introspection_url"]
    timeout = float(config.get("timeout", 10))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._answer(413, b"")
                return
            body = self.rfile.read(length)
            form = urllib.parse.parse_qs(body.decode("ascii", "replace"))
            if not is_jwt(form.get("token", [""])[0]):
                log("not a JWT (e.g. a refresh token): inactive, authentik not asked")
                self._answer(200, INACTIVE)
                return
            headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
            if self.headers.get("Authorization"):
                headers["Authorization"] = self.headers["Authorization"]
            request = urllib.request.Request(upstream, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=timeout, context=context) as answer:
                    self._answer(answer.status, answer.read(MAX_BODY), answer.headers.get("Content-Type", "application/json"))
            except urllib.error.HTTPError as error:
                self._answer(error.code, error.read(MAX_BODY))
            except (OSError, ValueError) as error:
                log(f"authentik unreachable: {error}")
                self._answer(502, b"")

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - no access log
            pass

    return Handler


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    config = json.loads(Path(argv[1]).read_text())
    server = ThreadingHTTPServer(("127.0.0.1", int(config["port"])), make_handler(config))
    server.daemon_threads = True
    log(f"listening on 127.0.0.1:{config['port']}, forwarding JWTs to {config['introspection_url']}")
    # Return only once the port is open, so Dovecot's first login finds it.
    if os.fork() == 0:
        os.setsid()
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
