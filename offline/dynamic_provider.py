"""Runs a dynamic resource's provider as Pulumi's provider host does.

Pulumi keeps a Python dynamic provider in the resource's `__provider` input
(dill, by value, base64) and, on `pulumi up`, loads it in a process of its own
and calls create / update there. No Pulumi engine runs here, so the tests do
the same from a declared resource: the provider is loaded in a fresh,
isolated interpreter (`-I`: not even this checkout is importable), which
fails if it leans on anything the state does not carry.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

_HOST = """
import base64, json, sys
import dill
request = json.load(sys.stdin)
provider = dill.loads(base64.b64decode(request["provider"]))
if request["method"] == "create":
    result = provider.create(request["news"])
    print(json.dumps({"id": result.id, "outs": result.outs}))
else:
    result = provider.update(request["id"], request["olds"], request["news"])
    print(json.dumps({"id": request["id"], "outs": result.outs}))
"""


class ProviderFailed(RuntimeError):
    pass


def run_provider(declared_inputs: dict[str, Any], news: dict[str, Any], *, olds: dict[str, Any] | None = None,
                 id_: str = "") -> dict[str, Any]:
    """Calls create (or update, given olds) of the provider in `declared_inputs["__provider"]` with `news`."""
    request = {
        "provider": declared_inputs["__provider"],
        "method": "create" if olds is None else "update",
        "news": news,
        "olds": olds,
        "id": id_,
    }
    done = subprocess.run(
        [sys.executable, "-I", "-c", _HOST], input=json.dumps(request), capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise ProviderFailed(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result
