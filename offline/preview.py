"""Offline preview: what a stack declares, as a tree of plain text files.

    python -m offline.preview --out DIR [STACK ...]

Needs no Pulumi CLI, no credentials, no authentik and no Docker: the program
runs under Pulumi's mocks (offline.capture). For each stack it writes

    DIR/<stack>/resources.yaml   every resource: type, parent, options, inputs
    DIR/<stack>/files/<container>/<path>   every uploaded file, as the container sees it
    DIR/<stack>/exports.yaml     the stack outputs

Generated secrets appear as stable placeholders (`__SECRET_NAME__`), secret
config as `__SECRET_config.KEY__`, so two runs give identical trees and a diff
of two trees shows exactly which lines a change touches.
"""

from __future__ import annotations

import argparse
import base64
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from offline.capture import PLACEHOLDER_PREFIX, PROJECT_DIR, Capture, DeclaredResource, capture_stack

PLACEHOLDER = PLACEHOLDER_PREFIX
HIDDEN = "<secret>"
# Pulumi marks a whole top-level input secret when any part is; an upload's
# path and mode are not the secret part.
_UPLOAD_METADATA = re.compile(r"^uploads\.\d+\.(file|permissions|owner|group|executable)$")


def _mask(value: Any, path: str, secret_paths: set[str]) -> Any:
    """Hides any secret input that is not built only from placeholders."""
    secret = any(path == p or path.startswith(p + ".") for p in secret_paths) and not _UPLOAD_METADATA.match(path)
    if isinstance(value, dict):
        return {k: _mask(v, f"{path}.{k}" if path else k, secret_paths) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v, f"{path}.{i}" if path else str(i), secret_paths) for i, v in enumerate(value)]
    if secret and isinstance(value, str) and PLACEHOLDER not in value:
        return HIDDEN
    if secret and not isinstance(value, str) and value is not None:
        return HIDDEN
    return value


def _resource_entry(resource: DeclaredResource) -> dict[str, Any]:
    inputs = _mask(resource.inputs, "", resource.secret_paths)
    if resource.type == "docker:index/container:Container":
        folder = f"files/{inputs.get('name')}"
        for upload in inputs.get("uploads", []):
            upload["content"] = f"see {folder}{upload['file']}"
    entry: dict[str, Any] = {"type": resource.type, "parent": resource.parent_name or None}
    options = [
        name
        for name, on in (
            ("protect", resource.protect),
            ("retain_on_delete", resource.retain_on_delete),
            ("delete_before_replace", resource.delete_before_replace),
        )
        if on
    ]
    if options:
        entry["options"] = options
    if resource.secret_paths:
        entry["secret_inputs"] = sorted(resource.secret_paths)
    if resource.custom:
        entry["inputs"] = inputs
    return entry


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=True, default_flow_style=False, width=100, allow_unicode=True)


def write_tree(capture: Capture, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    resources = {r.name: _resource_entry(r) for r in sorted(capture.resources, key=lambda r: r.name)}
    (out / "resources.yaml").write_text(_dump(resources))
    exports = {
        name: (HIDDEN if name in capture.secret_exports and PLACEHOLDER not in str(value) else value)
        for name, value in capture.exports.items()
    }
    (out / "exports.yaml").write_text(_dump(exports))
    for container in capture.of_type("docker:index/container:Container"):
        masked = _mask(container.inputs, "", container.secret_paths)
        for upload in masked.get("uploads", []):
            target = out / "files" / masked["name"] / upload["file"].lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(upload.get("content", ""))
    _write_swarm_files(capture, out)


def _write_swarm_files(capture: Capture, out: Path) -> None:
    """A Swarm service's configs and secrets, decoded, where its tasks see them (as the containers' uploads)."""
    by_id = {r.outputs.get("id"): r for r in capture.of_type("docker:index/secret:Secret")
             + capture.of_type("docker:index/serviceConfig:ServiceConfig")}
    for service in capture.of_type("docker:index/service:Service"):
        container = service.inputs["taskSpec"]["containerSpec"]
        for item in container.get("configs", []) + container.get("secrets", []):
            resource = by_id[item.get("configId") or item.get("secretId")]
            text = base64.b64decode(resource.inputs["data"]).decode()
            if "data" in resource.secret_paths and PLACEHOLDER not in text:
                text = HIDDEN
            target = out / "files" / service.inputs["name"] / item["fileName"].lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)


def stacks_in(project_dir: Path) -> list[str]:
    return sorted(p.name[len("Pulumi."):-len(".yaml")] for p in (project_dir / "stacks").glob("Pulumi.*.yaml"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m offline.preview", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder to write (replaced per stack)")
    parser.add_argument("--project", type=Path, default=PROJECT_DIR, help="project folder (default: this checkout)")
    parser.add_argument("stacks", nargs="*", help="stacks to preview (default: every stacks/Pulumi.<stack>.yaml)")
    args = parser.parse_args(argv)
    project = args.project.resolve()
    stacks = args.stacks or stacks_in(project)
    if not stacks:
        parser.error(f"no stacks in {project / 'stacks'}")
    for stack in stacks:
        capture = capture_stack(stack, placeholders=True, project_dir=project)
        write_tree(capture, args.out / stack)
        print(f"{stack}: {len(capture.resources)} resources -> {args.out / stack}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
