"""Runs the Pulumi program without an engine and records what it declares.

Pulumi's own mock monitor stands in for the engine: the program (the project's
real `__main__.py`) runs unchanged, every resource registration and data-source
look-up is recorded with its inputs, and which inputs are secret. The unit
tests, the offline preview and the end-to-end deployment all read the graph
from here, so each of them sees exactly what `pulumi up` would be asked for.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import runpy
import secrets
import string
import sys
import pickle
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc
from pulumi.runtime.settings import SETTINGS
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from offline.stack_file import StackConfig, project_name, read_stack_file

PROJECT_DIR = Path(__file__).resolve().parent.parent


@dataclass
class DeclaredResource:
    type: str
    name: str
    parent_name: str          # the logical name of the parent ("" for the stack)
    inputs: dict[str, Any]    # secrets unwrapped
    secret_paths: set[str]    # dotted paths of inputs that are secret, e.g. "uploads.0.content"
    custom: bool
    protect: bool
    retain_on_delete: bool
    delete_before_replace: bool
    outputs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Invoke:
    token: str
    args: dict[str, Any]


@dataclass
class Capture:
    stack: str
    resources: list[DeclaredResource]
    invokes: list[Invoke]
    exports: dict[str, Any]
    secret_exports: set[str]

    def of_type(self, type_: str) -> list[DeclaredResource]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str, name_suffix: str = "") -> DeclaredResource:
        found = [r for r in self.of_type(type_) if r.name.endswith(name_suffix)]
        if len(found) != 1:
            raise LookupError(f"expected one {type_} named *{name_suffix}, found {[r.name for r in found]}")
        return found[0]

    def config_carrier(self, service: str) -> DeclaredResource:
        """The container that holds `service`'s uploaded files (components/containers.py)."""
        return self.one("docker:index/container:Container", f"-{service}-config")

    def uploads(self, service: str) -> dict[str, dict[str, Any]]:
        """`service`'s uploaded files by path, as declared on its config carrier."""
        return {u["file"]: u for u in self.config_carrier(service).inputs.get("uploads", [])}

    def by_name(self, name: str) -> DeclaredResource:
        return next(r for r in self.resources if r.name == name)


class SecretMaker:
    """Values for generated secrets: random (to deploy) or stable placeholders (to show)."""

    def __init__(self, placeholders: bool, kept: Optional[dict[str, dict[str, Any]]] = None) -> None:
        self.placeholders = placeholders
        self.kept = kept or {}  # resource name -> the outputs an earlier run generated

    def random_result(self, name: str, inputs: dict[str, Any]) -> str:
        length = int(inputs.get("length", 32))
        if name in self.kept:
            return self.kept[name]["result"]
        if self.placeholders:
            return placeholder(name)
        alphabet = string.ascii_letters + string.digits
        if inputs.get("special", True) and inputs.get("overrideSpecial"):
            alphabet += inputs["overrideSpecial"]
        return "".join(secrets.choice(alphabet) for _ in range(length))

    def config_secret(self, key: str) -> str:
        return placeholder("config." + key.replace(":", "."))

    def private_key(self, name: str, inputs: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
        """pulumi-tls PrivateKey outputs: (secret ones, public ones), as the provider names them.

        Real: a fresh RSA key of rsaBits (cryptography), in the provider's
        formats (PKCS#1 PEM, PKCS#8 PEM, SubjectPublicKeyInfo PEM). Placeholders:
        stable text, with a public PEM whose body is valid base64.
        """
        if name in self.kept:
            outputs = self.kept[name]
            return ({k: outputs[k] for k in ("privateKeyPem", "privateKeyPemPkcs8", "privateKeyOpenssh")},
                    {k: outputs[k] for k in ("publicKeyPem", "publicKeyOpenssh")})
        if inputs.get("algorithm") != "RSA":
            raise NotImplementedError(f"{name}: the mocks make RSA keys only, got {inputs.get('algorithm')!r}")
        if self.placeholders:
            body = base64.b64encode(f"placeholder public key of {name}".encode()).decode()
            public_pem = f"-----BEGIN PUBLIC KEY-----\n{body}\n-----END PUBLIC KEY-----\n"
            secret = {k: placeholder(f"{name}.{k}") for k in ("privateKeyPem", "privateKeyPemPkcs8", "privateKeyOpenssh")}
            return secret, {"publicKeyPem": public_pem, "publicKeyOpenssh": f"ssh-rsa {body}\n"}
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=int(inputs.get("rsaBits", 2048)))
        pem, none = serialization.Encoding.PEM, serialization.NoEncryption()
        secret = {
            "privateKeyPem": key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL, none).decode(),
            "privateKeyPemPkcs8": key.private_bytes(pem, serialization.PrivateFormat.PKCS8, none).decode(),
            "privateKeyOpenssh": key.private_bytes(pem, serialization.PrivateFormat.OpenSSH, none).decode(),
        }
        public = key.public_key()
        return secret, {
            "publicKeyPem": public.public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo).decode(),
            "publicKeyOpenssh": public.public_bytes(
                serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
            ).decode() + "\n",
        }


PLACEHOLDER_PREFIX = "__SECRET_"


def placeholder(name: str) -> str:
    """A stable stand-in for a secret, made of URL-safe characters only, so it
    survives percent-encoding and quoting in every rendered file."""
    return f"{PLACEHOLDER_PREFIX}{re.sub(r'[^A-Za-z0-9._-]', '-', name)}__"


def _stable_number(*parts: str) -> int:
    return int(hashlib.sha256("/".join(parts).encode()).hexdigest()[:8], 16) % 90000 + 10000


def string_leaves(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every text value inside a declared value, with its dotted path (as in secret_paths)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from string_leaves(v, f"{path}.{k}" if path else k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from string_leaves(v, f"{path}.{i}" if path else str(i))
    elif isinstance(value, str):
        yield path, value


def _unwrap(value: Any, path: str, secret_paths: set[str]) -> Any:
    if rpc.is_rpc_secret(value):
        secret_paths.add(path)
        return _unwrap(rpc.unwrap_rpc_secret(value), path, set())
    if isinstance(value, dict):
        return {k: _unwrap(v, f"{path}.{k}" if path else k, secret_paths) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v, f"{path}.{i}" if path else str(i), secret_paths) for i, v in enumerate(value)]
    if isinstance(value, float) and value.is_integer():
        # The wire format has only doubles; ports and ids read better as ints.
        return int(value)
    return value


class _ProgramMocks(pulumi.runtime.Mocks):
    """Answers like the providers would, deterministically, for every type the program uses."""

    def __init__(self, maker: SecretMaker) -> None:
        self.maker = maker
        self.invokes: list[Invoke] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[Optional[str], dict]:
        state = dict(args.inputs)
        plain = _unwrap(args.inputs, "", set())
        if args.typ in ("random:index/randomPassword:RandomPassword", "random:index/randomString:RandomString"):
            state["result"] = rpc.wrap_rpc_secret(self.maker.random_result(args.name, plain))
            return f"{args.name}-id", state
        if args.typ == "tls:index/privateKey:PrivateKey":
            # The provider marks the private forms secret (additional_secret_outputs).
            secret, public = self.maker.private_key(args.name, plain)
            state.update({k: rpc.wrap_rpc_secret(v) for k, v in secret.items()})
            state.update(public)
            return f"{args.name}-id", state
        if args.typ == "docker:index/image:Image":
            # Without a push the provider reports the local image id here.
            digest = hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()
            state["repoDigest"] = f"sha256:{digest}"
            return f"{args.name}-id", state
        if args.typ.startswith("authentik:"):
            if args.typ == "authentik:index/application:Application":
                state["uuid"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"authentik-application/{args.name}"))
            # authentik ids are numbers (providers) or uuids; a stable number suits both uses here.
            return str(_stable_number(args.typ, args.name)), state
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list[tuple[str, str]]]:
        plain = _unwrap(dict(args.args), "", set())
        self.invokes.append(Invoke(args.token, plain))
        if args.token == "authentik:index/getFlow:getFlow":
            return {"id": f"flow:{plain['slug']}", "slug": plain["slug"], "name": plain["slug"]}, []
        if args.token == "authentik:index/getCertificateKeyPair:getCertificateKeyPair":
            return {"id": f"keypair:{plain['name']}", "name": plain["name"]}, []
        if args.token == "authentik:index/getPropertyMappingProviderScope:getPropertyMappingProviderScope":
            scope = plain["managed"].rsplit("scope-", 1)[-1]
            return {"id": f"scope:{scope}", "managed": plain["managed"], "scopeName": scope}, []
        if args.token == "authentik:index/getGroup:getGroup":
            return {"id": f"group:{plain['name']}", "name": plain["name"]}, []
        return {}, []


class _RecordingMonitor(pulumi_mocks.MockMonitor):
    def __init__(self, mocks: _ProgramMocks) -> None:
        super().__init__(mocks)
        self.recorded: list[DeclaredResource] = []
        self.names_by_urn: dict[str, str] = {}

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        registration = self.resources.get(response.urn)
        outputs = _unwrap(dict(registration.state), "", set()) if registration else {}
        if registration:
            outputs["id"] = registration.id
        secret_paths: set[str] = set()
        inputs = _unwrap(rpc.deserialize_properties(request.object), "", secret_paths)
        self.names_by_urn[response.urn] = request.name
        self.recorded.append(
            DeclaredResource(
                type=request.type,
                name=request.name,
                parent_name=self.names_by_urn.get(request.parent, ""),
                inputs=inputs,
                secret_paths=secret_paths,
                custom=bool(request.custom),
                protect=bool(request.protect),
                retain_on_delete=bool(request.retainOnDelete),
                delete_before_replace=bool(request.deleteBeforeReplace),
                outputs=outputs,
            )
        )
        return response


@contextlib.contextmanager
def _in_project(project_dir: Path) -> Iterator[None]:
    # The program imports `components`; take it from this project, not from a
    # checkout captured earlier in the same process.
    for module in [m for m in sys.modules if m == "components" or m.startswith("components.")]:
        origin = getattr(sys.modules[module], "__file__", None) or ""
        if not Path(origin).resolve().is_relative_to(project_dir.resolve()):
            del sys.modules[module]
    previous = os.getcwd()
    sys.path.insert(0, str(project_dir))
    os.chdir(project_dir)
    try:
        yield
    finally:
        os.chdir(previous)
        sys.path.remove(str(project_dir))


def capture(
    stack: str,
    config: StackConfig,
    *,
    placeholders: bool = True,
    project_dir: Path = PROJECT_DIR,
    earlier: Optional[Capture] = None,
) -> Capture:
    """Runs `project_dir/__main__.py` for `stack` with `config` and returns what it declared.

    placeholders=True gives generated secrets stable `__SECRET_NAME__` values (for
    showing); False gives real random values (for deploying in tests).
    earlier: an earlier capture of the same stack (an update): its generated values
    are kept, as `pulumi up` keeps random resources in the stack's state.
    """
    maker = SecretMaker(placeholders, kept=_generated_outputs(earlier))
    mocks = _ProgramMocks(maker)
    monitor = _RecordingMonitor(mocks)
    exports: dict[str, Any] = {}
    secret_exports: set[str] = set()

    pulumi.runtime.settings.reset_options()
    pulumi.runtime.set_mocks(mocks, project=config.project, stack=stack, preview=False, monitor=monitor)
    # The mock monitor implements RegisterPackage, but set_mocks does not load
    # its feature list: without this, parameterized (bridged) providers such as
    # pulumi-authentik refuse to register.
    SETTINGS.feature_support["parameterization"] = True
    pulumi.runtime.set_all_config(dict(config.values), sorted(config.secret_keys))

    declared_exports: dict[str, pulumi.Output[Any]] = {}

    def record_export(name: str, value: Any) -> None:
        declared_exports[name] = pulumi.Output.from_input(value)

    real_export = pulumi.export
    pulumi.export = record_export  # type: ignore[assignment]
    # pulumi.dynamic's serialize_provider wraps pickle's _Pickler methods
    # anew on every call and never unwraps them. `pulumi up` runs the program
    # once per process; many captures in one process would nest the wrappers
    # until pickling overflows the stack. Each capture starts from pickle's own.
    pickler_methods = {name: pickle._Pickler.__dict__[name] for name in ("_batch_setitems", "save_dict")}
    try:
        with _in_project(project_dir):
            def program() -> None:
                runpy.run_path(str(project_dir / "__main__.py"), run_name="__main__")

            try:
                _sync_await(run_pulumi_func(program))
            except Exception as err:
                # Lets callers check that a bad stack stopped before registering anything.
                err.declared = [r for r in monitor.recorded if r.type != "pulumi:pulumi:Stack"]  # type: ignore[attr-defined]
                raise
            for name, output in declared_exports.items():
                exports[name] = _sync_await(output.future())
                if _sync_await(output.is_secret()):
                    secret_exports.add(name)
    finally:
        for name, method in pickler_methods.items():
            setattr(pickle._Pickler, name, method)
        pulumi.export = real_export  # type: ignore[assignment]
        pulumi.runtime.set_all_config({}, [])
        pulumi.runtime.settings.reset_options()

    resources = [r for r in monitor.recorded if r.type != "pulumi:pulumi:Stack"]
    return Capture(stack=stack, resources=resources, invokes=mocks.invokes, exports=exports, secret_exports=secret_exports)


def read_stack(stack: str, *, project_dir: Path = PROJECT_DIR, stack_file: Optional[Path] = None) -> StackConfig:
    """A stack's config as the CLI hands it over (offline.stack_file), secure values as placeholders."""
    path = stack_file or project_dir / "stacks" / f"Pulumi.{stack}.yaml"
    return read_stack_file(path, project_name(project_dir), decrypt=SecretMaker(True).config_secret)


def capture_stack(stack: str, *, placeholders: bool = True, project_dir: Path = PROJECT_DIR,
                  stack_file: Optional[Path] = None) -> Capture:
    """Captures a stack from its file in stacks/ (or `stack_file`)."""
    config = read_stack(stack, project_dir=project_dir, stack_file=stack_file)
    return capture(stack, config, placeholders=placeholders, project_dir=project_dir)


# Generated values Pulumi keeps in a stack's state from one update to the next.
_GENERATED = ("random:index/randomPassword:RandomPassword", "random:index/randomString:RandomString",
              "tls:index/privateKey:PrivateKey")


def _generated_outputs(previous: Optional[Capture]) -> dict[str, dict[str, Any]]:
    if previous is None:
        return {}
    return {r.name: r.outputs for r in previous.resources if r.type in _GENERATED}
