"""A stack file's config, exactly as the Pulumi CLI hands it to a Python program.

The one reader of `stacks/Pulumi.<stack>.yaml` for everything that runs the
program without the CLI: the unit tests, the offline preview (and so the
pull-request diff job), the end-to-end tests and the benchmarks.

It mirrors pulumi/pulumi `sdk/go/common/resource/config/value.go`,
`Value.unmarshalValue`, which the CLI applies to each top-level value of the
stack file's `config:` map before the language host passes the result to the
program (PULUMI_CONFIG, every value a string):

- the value is first unmarshalled into a Go string. Any scalar succeeds, so
  the program gets the scalar's text as written: `true` -> "true",
  `8080` -> "8080", `1.50` -> "1.50". A YAML null (`null`, `~` or nothing)
  leaves the Go string empty: "" (pulumi/pulumi#19483; `pulumi config set`
  writes such values back as "");
- a map whose only key is `secure` with a string value is a secret; the CLI
  decrypts it, and the program sees the key among its secret keys;
- anything else (a map or a list) is marshalled to JSON (`json.Marshal`:
  keys sorted, no spaces); nulls nested inside stay JSON `null`, and nested
  `secure` values make the whole key secret.

Nested values are read with YAML 1.2's core schema, as the CLI's YAML library
does: `yes`, `on` and `1:20` stay text, only true/false are booleans.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import yaml

# Keys a stack file may have besides `config` (pulumi's workspace.ProjectStack).
_STACK_FILE_KEYS = {"config", "secretsprovider", "encryptionsalt", "encryptedkey", "environment"}


class _CoreSchemaLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 core-schema scalars instead of YAML 1.1's."""


_CoreSchemaLoader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in (
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", list("-+0123456789")),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        list("-+.0123456789"),
    ),
):
    _CoreSchemaLoader.add_implicit_resolver(_tag, re.compile(_pattern), _first)


def _core_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node))
    return int(text, 0) if text[:2] in ("0o", "0x") else int(text, 10)


_CoreSchemaLoader.add_constructor("tag:yaml.org,2002:int", _core_int)


@dataclass(frozen=True)
class StackConfig:
    """`namespace:key` -> the string the program receives, and which keys are secret."""

    project: str
    values: Mapping[str, str]
    secret_keys: frozenset[str] = frozenset()
    object_keys: frozenset[str] = frozenset()  # keys whose value is JSON (maps and lists)

    def key(self, name: str) -> str:
        return name if ":" in name else f"{self.project}:{name}"

    def get(self, name: str) -> Optional[str]:
        return self.values.get(self.key(name))

    def with_values(self, **values: Any) -> "StackConfig":
        """A copy with settings changed as `pulumi config set` would: plain text,
        or JSON for a dict/list (as `pulumi config set --path` leaves an object)."""
        new = dict(self.values)
        objects = set(self.object_keys)
        for name, value in values.items():
            key = self.key(name)
            if isinstance(value, (dict, list)):
                new[key] = _json(value)
                objects.add(key)
            elif isinstance(value, str):
                new[key] = value
                objects.discard(key)
            else:
                raise TypeError(f"{name}: the CLI hands the program text or JSON, not {type(value).__name__}")
        return StackConfig(self.project, new, self.secret_keys, frozenset(objects))

    def without(self, *names: str) -> "StackConfig":
        """A copy with settings removed, as `pulumi config rm` does."""
        drop = {self.key(n) for n in names}
        return StackConfig(
            self.project,
            {k: v for k, v in self.values.items() if k not in drop},
            self.secret_keys - drop,
            self.object_keys - drop,
        )

    def as_rewritten_by_config_set(self) -> str:
        """The stack file `pulumi config set` would write back for this config.

        The CLI saves each plain value as a YAML string (so `true` comes back
        quoted and a null as ""), objects as YAML maps, secrets as `secure:`.
        """
        document: dict[str, Any] = {}
        for key, value in self.values.items():
            if key in self.secret_keys and key not in self.object_keys:
                document[key] = {"secure": "v1:" + "A" * 24}
            elif key in self.secret_keys:
                raise ValueError(f"{key}: rewriting an object with secure values is not supported here")
            elif key in self.object_keys:
                document[key] = json.loads(value)
            else:
                document[key] = value
        return yaml.safe_dump({"config": document}, sort_keys=False, default_flow_style=False)


def _json(value: Any) -> str:
    # Go's json.Marshal of a map[string]interface{}: keys sorted, no spaces.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _is_secure(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("secure"), str)


def _decrypt_nested(value: Any, decrypt: Callable[[], str]) -> Any:
    if _is_secure(value):
        return decrypt()
    if isinstance(value, dict):
        return {k: _decrypt_nested(v, decrypt) for k, v in value.items()}
    if isinstance(value, list):
        return [_decrypt_nested(v, decrypt) for v in value]
    return value


def _has_secure(value: Any) -> bool:
    if _is_secure(value):
        return True
    if isinstance(value, dict):
        return any(_has_secure(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_secure(v) for v in value)
    return False


def read_stack_file(path: Path, project: str, decrypt: Callable[[str], str]) -> StackConfig:
    """Reads `path` as the CLI would for `project`.

    decrypt(key) gives the plain value of a `secure:` entry: the CLI decrypts
    with the stack's secrets provider, which nothing here has, so callers pass
    a stand-in (e.g. a stable placeholder).
    """
    return read_stack_text(path.read_text(), project, decrypt, where=str(path))


def read_stack_text(
    text: str, project: str, decrypt: Callable[[str], str] = lambda key: "", where: str = "stack file"
) -> StackConfig:
    """read_stack_file for a stack file's text."""
    path = where
    root = yaml.compose(text, Loader=_CoreSchemaLoader)
    if root is None:
        return StackConfig(project, {})
    if not isinstance(root, yaml.MappingNode):
        raise ValueError(f"{path}: a stack file is a YAML map")
    top = {key.value: node for key, node in root.value}
    unknown = set(top) - _STACK_FILE_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown top-level keys {sorted(unknown)}")
    config_node = top.get("config")
    values: dict[str, str] = {}
    secrets: set[str] = set()
    objects: set[str] = set()
    if config_node is None or (isinstance(config_node, yaml.ScalarNode) and config_node.tag.endswith(":null")):
        return StackConfig(project, values)
    if not isinstance(config_node, yaml.MappingNode):
        raise ValueError(f"{path}: `config` must be a map")
    for key_node, node in config_node.value:
        key = key_node.value if ":" in key_node.value else f"{project}:{key_node.value}"
        if isinstance(node, yaml.ScalarNode):
            # Unmarshalled into a Go string: the text as written, "" for a null.
            values[key] = "" if node.tag == "tag:yaml.org,2002:null" else node.value
            continue
        data = _CoreSchemaLoader("").construct_document(node)
        if _is_secure(data):
            values[key] = decrypt(key)
            secrets.add(key)
            continue
        if _has_secure(data):
            data = _decrypt_nested(data, lambda: decrypt(key))
            secrets.add(key)
        values[key] = _json(data)
        objects.add(key)
    return StackConfig(project, values, frozenset(secrets), frozenset(objects))


def settings_document(project: str, settings: Mapping[str, Any]) -> str:
    """A stack file's text with `settings` (name -> YAML value) under the project's namespace."""
    return yaml.safe_dump({"config": {f"{project}:{k}": v for k, v in settings.items()}}, sort_keys=False)


def project_name(project_dir: Path) -> str:
    """The `name:` of the project's Pulumi.yaml (the config namespace of its settings)."""
    document = yaml.safe_load((project_dir / "Pulumi.yaml").read_text())
    return str(document["name"])
