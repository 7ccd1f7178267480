#!/usr/bin/python3
"""Keeps Dovecot's local JWT validation keys equal to authentik's JWKS.

Dovecot (token_validation: local) checks each access token's RS256 signature
with the PEM public key at `<key dir>/<azp>/RS256/<kid>` (dict fs; `/` and `%`
in azp and kid escaped as `%2f` and `%25`). This script fetches the provider's
JWKS (`<authentik>/application/o/<slug>/jwks/`) with the same CA trust as
Dovecot's oauth2 HTTP client, and:

- writes every new RSA key before it removes any key that is gone, so a
  rotation never leaves a moment without the new key;
- keeps every key it has when a fetch fails or answers nonsense (authentik
  down, restarting, an empty key list), so logins go on with the known keys;
- runs `doveadm reload` when a key was removed or changed: Dovecot's auth
  process caches each key it loaded and would accept a removed key until it
  restarts. A new key needs nothing: Dovecot reads the file on first use.

    jwks-sync.py CONFIG --once     one sync; exit 0 if the keys are current
    jwks-sync.py CONFIG            one sync now, then one every `interval` s

CONFIG is the JSON file the Pulumi program renders
(components/render/dovecot.py, render_jwks_sync_config). Python's standard
library only (Debian's python3); never logs anything but URLs and key ids.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ALGORITHM = "RS256"
MAX_BODY = 1 << 20


def log(message: str) -> None:
    print(f"jwks-sync: {message}", file=sys.stderr, flush=True)


def escape(identifier: str) -> str:
    """Dovecot's escape_identifier (lib-oauth2/oauth2-jwt.c): '%' and '/' only."""
    return identifier.replace("%", "%25").replace("/", "%2f")


# -- a PEM public key from a JWK's n and e (DER by hand: no extra package) ------


def _der(tag: int, body: bytes) -> bytes:
    length = len(body)
    if length < 0x80:
        head = bytes([length])
    else:
        raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
        head = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + head + body


def _der_integer(value: int) -> bytes:
    raw = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big")  # a leading 0 keeps it positive
    return _der(0x02, raw)


def _b64url_int(text: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")


RSA_ALGORITHM_ID = bytes.fromhex("300d06092a864886f70d0101010500")  # rsaEncryption, NULL


def rsa_public_pem(n: int, e: int) -> str:
    rsa_key = _der(0x30, _der_integer(n) + _der_integer(e))
    spki = _der(0x30, RSA_ALGORITHM_ID + _der(0x03, b"\x00" + rsa_key))
    body = base64.b64encode(spki).decode("ascii")
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN PUBLIC KEY-----\n" + "\n".join(lines) + "\n-----END PUBLIC KEY-----\n"


def keys_of(jwks: object) -> dict[str, str]:
    """kid -> PEM for every RS256 signing key of a JWKS; other keys are skipped."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise ValueError("not a JWKS (no 'keys' list)")
    found: dict[str, str] = {}
    for jwk in jwks["keys"]:
        if not isinstance(jwk, dict):
            continue
        kid = jwk.get("kid")
        if jwk.get("kty") != "RSA" or jwk.get("alg", ALGORITHM) != ALGORITHM or jwk.get("use", "sig") != "sig":
            log(f"skipping key {kid!r}: not an {ALGORITHM} signing key")
            continue
        if not isinstance(kid, str) or not kid or not isinstance(jwk.get("n"), str) or not isinstance(jwk.get("e"), str):
            log(f"skipping key {kid!r}: no kid, n or e")
            continue
        found[kid] = rsa_public_pem(_b64url_int(jwk["n"]), _b64url_int(jwk["e"]))
    return found


# -- the sync ---------------------------------------------------------------------


def fetch(config: dict) -> dict[str, str]:
    context = ssl.create_default_context(
        cafile=config.get("ca_file") or None, capath=None if config.get("ca_file") else config.get("ca_dir")
    )
    request = urllib.request.Request(config["jwks_url"], headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=config.get("timeout", 10), context=context) as answer:
        return keys_of(json.loads(answer.read(MAX_BODY)))


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".new-")
    with os.fdopen(handle, "w") as out:
        out.write(text)
    os.chmod(temporary, 0o644)  # public keys; Dovecot's auth process reads them
    os.replace(temporary, path)


def sync(config: dict, reload: bool = True) -> bool:
    """One round. True when the keys on disk match the JWKS just fetched."""
    try:
        wanted = fetch(config)
    except Exception as error:  # noqa: BLE001 - any failure keeps the keys we have
        log(f"fetching {config['jwks_url']} failed, keeping the current keys: {error}")
        return False
    if not wanted:
        log(f"{config['jwks_url']} lists no {ALGORITHM} key, keeping the current keys")
        return False
    folder = Path(config["key_dir"]) / escape(config["azp"]) / ALGORITHM
    folder.mkdir(parents=True, exist_ok=True, mode=0o755)
    present = {path.name: path.read_text() for path in folder.iterdir() if not path.name.startswith(".")}
    wanted_files = {escape(kid): pem for kid, pem in wanted.items()}
    changed = False
    for name, pem in wanted_files.items():  # first add (and update) ...
        if present.get(name) != pem:
            changed = changed or name in present
            _write(folder / name, pem)
            log(f"{'updated' if name in present else 'added'} key {name}")
    for name in present.keys() - wanted_files.keys():  # ... then remove
        (folder / name).unlink()
        changed = True
        log(f"removed key {name}")
    if changed and reload:
        # Drop the keys Dovecot's auth process cached: a removed key must stop working.
        result = subprocess.run(["doveadm", "reload"], capture_output=True, text=True, check=False)
        log("doveadm reload: " + ("done" if result.returncode == 0 else result.stderr.strip() or "failed"))
    return True


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3) or (len(argv) == 3 and argv[2] != "--once"):
        print(__doc__, file=sys.stderr)
        return 2
    config = json.loads(Path(argv[1]).read_text())
    if len(argv) == 3:
        # Before Dovecot runs (the entrypoint): nothing to reload.
        return 0 if sync(config, reload=False) else 1
    interval = float(config.get("interval", 300))
    while True:
        try:
            sync(config)
        except Exception as error:  # noqa: BLE001 - the loop must outlive any bad round
            log(f"sync failed, keeping the current keys: {error}")
        time.sleep(interval)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
