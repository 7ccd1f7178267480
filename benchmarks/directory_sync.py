"""Benchmark: one directory sync of 1,000 and 10,000 users (with aliases) and 200 groups.

    .venv/bin/python benchmarks/directory_sync.py [--where auto|container|local] [--image IMAGE] [--build]

The authentik stand-in runs in this process (real HTTPS on 127.0.0.1, a test
CA made for the run) with a directory of N users, each with one or two
`mail_aliases` (every tenth with a `mail_quota`, every twentieth outside the
mail domain), and 200 groups, 50 of them lists (`mail_address`). Then the real
images/postfix/directory-sync.py runs `--once`, twice:

- where=container (the default when Docker and the Postfix image are there;
  --build builds images/postfix under --image first, from the local
  debian:trixie-slim):
  in a container of the Postfix image, as its user `directory` (5020), on the
  host's network namespace so it reaches the stand-in on 127.0.0.1, with the
  image's real `postmap`; the container is named `rca-dirsync-dev-bench-*` and
  removed after each run;
- where=local: with this machine's python3, and a stub `postmap` (it writes
  the source as JSON to `.db`) when Postfix is not installed; said in the output.

It prints, per size: the sync's own time for the round (status.json
`duration_s`: reading authentik, building, writing, postmap), the wall time of
the whole run (process or container start included), the authentik requests
(status.json `requests`, and what the stand-in logged), the peak RSS of the
sync process (getrusage of the child, measured by a small wrapper beside it),
and the second, unchanged round: its time and whether it rewrote anything
(status.json `written`, and the files' mtimes and inodes).

Everything talks to 127.0.0.1; every loop has a fixed count; the stand-in
stops and every container is removed at the end. No assertions: it prints numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e import pki  # noqa: E402
from tests.e2e.standin import make_server  # noqa: E402

SCRIPT = ROOT / "images" / "postfix" / "directory-sync.py"
DEFAULT_IMAGE = "rca-dirsync-dev-postfix:latest"
DOMAIN = "example.test"
API_KEY = "benchmark-directory-api-key-0123456789-0123456789-0123456789"
SIZES = (1_000, 10_000)
GROUPS = 200
LISTS = 50
DIRECTORY_FILES = ("mailboxes", "mailboxes.db", "aliases", "aliases.db", "senders", "senders.db",
                   "dovecot-users", "directory.json", "state.json")

# Runs the sync as a child and reports the child's peak RSS (ru_maxrss, KiB on Linux).
WRAPPER = """\
import resource, subprocess, sys, time
started = time.monotonic()
code = subprocess.run(sys.argv[1:]).returncode
wall = time.monotonic() - started
print(f"BENCH rc={code} wall={wall:.3f} maxrss_kib={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}")
"""

STUB_POSTMAP = """\
#!{python}
# Stub postmap for a machine without Postfix: postmap -c DIR hash:FILE -> FILE.db (JSON).
import json, sys
source = sys.argv[-1].partition(":")[2]
table = dict(line.split(None, 1) for line in open(source) if line.strip())
json.dump(table, open(source + ".db", "w"))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def directory(users: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """N users with aliases (plus the sync's service account) and 200 groups, 50 of them lists."""
    people: list[dict[str, Any]] = []
    for i in range(users):
        attributes: dict[str, Any] = {"mail_aliases": [f"alias{i}@{DOMAIN}"]}
        if i % 2:
            attributes["mail_aliases"].append(f"a.{i}@{DOMAIN}")
        if i % 10 == 0:
            attributes["mail_quota"] = "2G"
        domain = "elsewhere.example" if i % 20 == 19 else DOMAIN
        people.append({
            "username": f"user{i:05d}", "name": f"User {i}", "email": f"user{i}@{domain}", "password": "unused",
            "groups": [f"group{(i * k) % GROUPS:03d}" for k in (1, 7, 13)][: 1 + i % 3],
            "attributes": attributes,
        })
    people.append({"username": "svc-directory", "password": "unused", "type": "service_account",
                   "groups": ["directory-readers"]})
    groups = [{"name": f"group{g:03d}", "attributes": {"mail_address": f"list{g}@{DOMAIN}"} if g < LISTS else {}}
              for g in range(GROUPS - 1)]
    groups.append({"name": "directory-readers", "roles": ["directory-reader"]})
    return people, groups


class Requests:
    def __init__(self) -> None:
        self.api = 0
        self._lock = threading.Lock()

    def log(self, line: str) -> None:
        if line.startswith("GET /api/v3/core/"):
            with self._lock:
                self.api += 1


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {name: ((folder / name).stat().st_mtime_ns, (folder / name).stat().st_ino)
            for name in DIRECTORY_FILES if (folder / name).exists()}


def run_once(where: str, image: str, work: Path, python: str, env: dict[str, str], tag: str) -> dict[str, Any]:
    """One `directory-sync CONFIG --once` run; the wrapper's numbers plus status.json."""
    if where == "container":
        command = ["docker", "run", "--rm", "--name", f"rca-dirsync-dev-bench-{tag}", "--network", "host",
                   "--user", "5020:5020", "--read-only", "-v", f"{work}:/bench", "--entrypoint", "python3", image,
                   "/bench/wrapper.py", "directory-sync", "/bench/config-container.json", "--once"]
    else:
        command = [python, str(work / "wrapper.py"), python, str(SCRIPT), str(work / "config-local.json"), "--once"]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    total = time.monotonic() - started
    numbers = {}
    for line in result.stdout.splitlines():
        if line.startswith("BENCH "):
            numbers = dict(part.split("=", 1) for part in line.split()[1:])
    status = json.loads((work / "out" / "status.json").read_text())
    return {"rc": int(numbers.get("rc", result.returncode)), "wall": total,
            "maxrss_mib": int(numbers.get("maxrss_kib", 0)) / 1024, "status": status,
            "stderr_tail": result.stderr.strip().splitlines()[-2:]}


def bench(size: int, where: str, image: str, python: str, env: dict[str, str], keep: bool) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"rca-dirsync-bench-{size}-"))
    work.chmod(0o755)
    try:
        ca = pki.TestCA(work / "pki")
        (work / "pki").chmod(0o755)
        cert = ca.issue("127.0.0.1")
        people, groups = directory(size)
        port = free_port()
        requests = Requests()
        server = make_server({
            "base_url": f"https://127.0.0.1:{port}",
            "listen": {"host": "127.0.0.1", "port": port},
            "tls": {"cert_file": str(cert.cert_file), "key_file": str(cert.key_file)},
            "users": people,
            "roles": [{"name": "directory-reader",
                       "permissions": ["authentik_core.view_user", "authentik_core.view_group"]}],
            "groups": groups,
            "tokens": [{"identifier": "directory", "key": API_KEY, "user": "svc-directory", "intent": "api",
                        "expiring": False}],
        }, log=requests.log)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            (work / "token").write_text(API_KEY + "\n")
            (work / "token").chmod(0o644)
            (work / "wrapper.py").write_text(WRAPPER)
            (work / "out").mkdir(mode=0o755)
            if where == "container":
                os.chown(work / "out", 5020, 5020)
            base = {"api_url": f"https://127.0.0.1:{port}", "mail_domain": DOMAIN, "allowed_group": None,
                    "postmaster": f"user00000@{DOMAIN}", "default_quota": "5G", "mail_dir": "/var/mail",
                    "vmail_uid": 5000, "vmail_gid": 5000, "interval": 60, "page_size": 100, "timeout": 30,
                    "ca_dir": "/etc/ssl/certs"}
            (work / "config-container.json").write_text(json.dumps({
                **base, "token_file": "/bench/token", "ca_file": f"/bench/pki/{ca.ca_file.name}",
                "output_dir": "/bench/out"}))
            (work / "config-local.json").write_text(json.dumps({
                **base, "token_file": str(work / "token"), "ca_file": str(ca.ca_file),
                "output_dir": str(work / "out")}))
            first = run_once(where, image, work, python, env, f"{size}-1")
            api_first = requests.api
            before = snapshot(work / "out")
            second = run_once(where, image, work, python, env, f"{size}-2")
            after = snapshot(work / "out")
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)
        counts = first["status"]["counts"]
        return {
            "users": size, "groups": GROUPS, "where": where,
            "ok": first["rc"] == 0 and first["status"]["outcome"] == "ok",
            "sync_s": first["status"]["duration_s"], "wall_s": round(first["wall"], 3),
            "requests": first["status"]["requests"], "requests_logged": api_first,
            "peak_rss_mib": round(first["maxrss_mib"], 1),
            "mailboxes": counts.get("mailboxes"), "aliases": counts.get("aliases"), "lists": counts.get("lists"),
            "skipped": counts.get("skipped"),
            "unchanged_sync_s": second["status"]["duration_s"], "unchanged_wall_s": round(second["wall"], 3),
            "unchanged_written": second["status"]["written"],
            "unchanged_files_touched": sorted(name for name in after if after[name] != before.get(name)),
            "unchanged_peak_rss_mib": round(second["maxrss_mib"], 1),
            "log_tail": first["stderr_tail"] if first["rc"] else [],
        }
    finally:
        if keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--where", choices=("auto", "container", "local"), default="auto")
    parser.add_argument("--image", default=DEFAULT_IMAGE, help="the Postfix image (with directory-sync)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="user counts, comma-separated")
    parser.add_argument("--build", action="store_true", help="build images/postfix as --image first")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the work folders")
    args = parser.parse_args()

    where = args.where
    if args.build:
        subprocess.run(["docker", "build", "-q", "-t", args.image, str(ROOT / "images" / "postfix")], check=True,
                       stdout=subprocess.DEVNULL, timeout=1800)
    if where == "auto":
        has_image = shutil.which("docker") and subprocess.run(
            ["docker", "image", "inspect", args.image], capture_output=True).returncode == 0
        where = "container" if has_image else "local"
    env = dict(os.environ)
    python = shutil.which("python3") or sys.executable
    note = f"in a container of {args.image} (real postmap, python3 of the image)" if where == "container" else ""
    stub_holder: list[Path | None] = [None]  # a stub postmap's folder, removed at the end
    try:
        return report(args, where, python, env, note, stub_holder)
    finally:
        if stub_holder[0] is not None:
            shutil.rmtree(stub_holder[0], ignore_errors=True)


def report(args: argparse.Namespace, where: str, python: str, env: dict[str, str], note: str,
           stub_holder: list[Path | None]) -> int:
    if where == "local":
        if shutil.which("postmap") or Path("/usr/sbin/postmap").exists():
            note = f"locally with {python} and this machine's postmap"
        else:
            stub = Path(tempfile.mkdtemp(prefix="rca-dirsync-postmap-"))
            stub_holder[0] = stub
            (stub / "postmap").write_text(STUB_POSTMAP.format(python=sys.executable))
            (stub / "postmap").chmod(0o755)
            env["PATH"] = f"{stub}{os.pathsep}{env['PATH']}"
            note = f"locally with {python} and a STUB postmap (no Postfix on this machine)"
    print(f"directory-sync benchmark: {note}")
    results = [bench(int(size), where, args.image, python, env, args.keep) for size in args.sizes.split(",")]
    header = ("users", "groups", "mailboxes", "aliases", "lists", "sync_s", "wall_s", "requests", "peak_rss_mib",
              "unchanged_sync_s", "unchanged_rewrote")
    print(" ".join(f"{h:>16}" for h in header))
    for r in results:
        rewrote = "nothing" if not r["unchanged_written"] and not r["unchanged_files_touched"] else \
            ",".join(r["unchanged_written"] + r["unchanged_files_touched"])
        row = (r["users"], r["groups"], r["mailboxes"], r["aliases"], r["lists"], r["sync_s"], r["wall_s"],
               f"{r['requests']} ({r['requests_logged']} logged)", r["peak_rss_mib"], r["unchanged_sync_s"], rewrote)
        print(" ".join(f"{str(v):>16}" for v in row) + ("" if r["ok"] else f"   FAILED: {r['log_tail']}"))
    if args.json:
        Path(args.json).write_text(json.dumps({"where": where, "note": note, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
