"""Scope mappings: Python expressions evaluated per user, as authentik does.

authentik wraps a mapping's expression (a function body that must ``return``
a dict) into a function and runs it with ``request`` (``request.user`` is the
token's user), ``user``, ``provider``, ``token`` and a few helpers in scope.
Userinfo and id_token claims are the deep merge of every assigned mapping
whose scope was granted, in order of scope name. A mapping that raises is
logged and its claims are left out; a non-dict result is ignored.
"""

from __future__ import annotations

import builtins
import copy
import json
import re
import textwrap
from dataclasses import dataclass
from types import CodeType
from typing import Any, Callable, Iterable

# The managed mappings authentik ships (blueprints/system/providers-oauth2.yaml),
# keyed by scope name: (mapping name, expression).
MANAGED_SCOPE_EXPRESSIONS: dict[str, tuple[str, str]] = {
    "openid": (
        "authentik default OAuth Mapping: OpenID 'openid'",
        "# This scope is required by the OpenID-spec, and must as such exist in authentik.\n"
        "# The scope by itself does not grant any information\n"
        "return {}\n",
    ),
    "email": (
        "authentik default OAuth Mapping: OpenID 'email'",
        'return {\n    "email": request.user.email,\n    "email_verified": False\n}\n',
    ),
    "profile": (
        "authentik default OAuth Mapping: OpenID 'profile'",
        "return {\n"
        '    "name": request.user.name,\n'
        '    "given_name": request.user.name,\n'
        '    "preferred_username": request.user.username,\n'
        '    "nickname": request.user.username,\n'
        '    "groups": [group.name for group in request.user.ak_groups.all()],\n'
        "}\n",
    ),
    "offline_access": (
        "authentik default OAuth Mapping: OpenID 'offline_access'",
        "# This scope grants the application a refresh token that can be used to refresh user data\n"
        "# and let the application access authentik without the users interaction\n"
        "return {}\n",
    ),
}

_FUNCTION_NAME = "__standin_mapping"


class MappingError(Exception):
    """A mapping's expression raised or returned something unusable."""


@dataclass
class ScopeMapping:
    name: str
    scope_name: str
    expression: str
    code: CodeType
    managed: bool = False


def compile_mapping(name: str, scope_name: str, expression: str, managed: bool = False) -> ScopeMapping:
    """Compile a mapping's function body; raises SyntaxError when it does not compile."""
    body = expression if expression.strip() else "pass"
    source = f"def {_FUNCTION_NAME}():\n" + textwrap.indent(body, "    ", lambda line: True)
    code = compile(source, f"<scope mapping {name!r}>", "exec")
    return ScopeMapping(name=name, scope_name=scope_name, expression=expression, code=code, managed=managed)


# --- the objects an expression sees -------------------------------------------------------


class ExprGroup:
    """A group, with the attributes expressions commonly read."""

    def __init__(self, name: str):
        self.name = name
        self.attributes: dict[str, Any] = {}
        self.is_superuser = False

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<Group {self.name}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ExprGroup):
            return other.name == self.name
        if isinstance(other, str):
            return other == self.name
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.name)


class ExprGroupSet:
    """Enough of a Django related manager for mapping expressions:
    ``user.ak_groups.all()``, ``.filter(name=...)``, ``.exists()``,
    ``.values_list("name", flat=True)``, iteration and ``"name" in user.groups``."""

    def __init__(self, groups: Iterable[ExprGroup]):
        self._groups = list(groups)

    def all(self) -> list[ExprGroup]:
        return list(self._groups)

    def filter(self, **lookups: Any) -> "ExprGroupSet":
        result = self._groups
        for key, value in lookups.items():
            if key == "name":
                result = [g for g in result if g.name == value]
            elif key == "name__in":
                result = [g for g in result if g.name in value]
            elif key == "name__iexact":
                result = [g for g in result if g.name.lower() == str(value).lower()]
            else:
                raise TypeError(f"the stand-in does not support the lookup {key!r}")
        return ExprGroupSet(result)

    def exists(self) -> bool:
        return bool(self._groups)

    def count(self) -> int:
        return len(self._groups)

    def first(self) -> ExprGroup | None:
        return self._groups[0] if self._groups else None

    def values_list(self, field: str, flat: bool = False) -> list:
        values = [getattr(g, field) for g in self._groups]
        return values if flat else [(v,) for v in values]

    def __iter__(self):
        return iter(self._groups)

    def __len__(self) -> int:
        return len(self._groups)

    def __contains__(self, item: object) -> bool:
        return any(g == item for g in self._groups)

    def __repr__(self) -> str:
        return f"<Groups {[g.name for g in self._groups]}>"


class ExprUser:
    """The user as a mapping expression sees it (a subset of authentik's User)."""

    def __init__(self, user):
        self.pk = user.pk
        self.id = user.pk
        self.username = user.username
        self.name = user.name
        self.email = user.email
        self.uid = user.uid
        self.uuid = user.uuid
        self.attributes = copy.deepcopy(user.attributes)
        self.is_active = True
        self.is_authenticated = True
        self.is_superuser = False
        self.type = "internal"
        self.path = "users"
        groups = [ExprGroup(name) for name in user.groups]
        self.groups = ExprGroupSet(groups)
        self.ak_groups = ExprGroupSet(groups)

    def __str__(self) -> str:
        return self.username

    def __repr__(self) -> str:
        return f"<User {self.username}>"


class ExprRequest:
    def __init__(self, user: ExprUser):
        self.user = user
        self.http_request = None
        self.obj = None
        self.context: dict[str, Any] = {}


class ExprProvider:
    def __init__(self, provider):
        self.name = provider.name
        self.client_id = provider.client_id
        self.client_type = provider.client_type
        self.application = type("Application", (), {"slug": provider.slug, "name": provider.application_name})()


class ExprToken:
    def __init__(self, scope: list[str]):
        self.scope = list(scope)


class _ExprLogger:
    def __init__(self, log: Callable[[str], None], mapping_name: str):
        self._log = log
        self._name = mapping_name

    def _emit(self, level: str, event: str, **kwargs: Any) -> None:
        extra = " ".join(f"{k}={v!r}" for k, v in kwargs.items())
        self._log(f"mapping {self._name!r}: ak_logger.{level}: {event} {extra}".rstrip())

    def debug(self, event: str = "", **kwargs: Any) -> None:
        self._emit("debug", event, **kwargs)

    def info(self, event: str = "", **kwargs: Any) -> None:
        self._emit("info", event, **kwargs)

    def warning(self, event: str = "", **kwargs: Any) -> None:
        self._emit("warning", event, **kwargs)

    def error(self, event: str = "", **kwargs: Any) -> None:
        self._emit("error", event, **kwargs)


def _regex_match(value: Any, regex: str) -> bool:
    return re.search(regex, value) is not None


def _regex_replace(value: Any, regex: str, repl: str) -> str:
    return re.sub(regex, repl, value)


def _list_flatten(value: Any) -> Any:
    if isinstance(value, list):
        if len(value) < 1:
            return None
        return value[0]
    return value


def _ak_is_group_member(user: ExprUser, **group_filter: Any) -> bool:
    return user.ak_groups.filter(**group_filter).exists()


def _jsonable(value: Any) -> Any:
    """Make claim values JSON-serialisable (sets and tuples become lists,
    anything else unknown becomes its string form)."""

    def default(obj: Any) -> Any:
        if isinstance(obj, (set, frozenset)):
            return sorted(obj, key=str)
        if isinstance(obj, tuple):
            return list(obj)
        return str(obj)

    return json.loads(json.dumps(value, default=default))


def deep_merge(base: dict, new: dict) -> dict:
    """deepmerge's ``always_merger``: dicts merge recursively, lists append,
    anything else is overridden by the newer value."""
    for key, value in new.items():
        if key in base and isinstance(base[key], dict) and isinstance(value, dict):
            deep_merge(base[key], value)
        elif key in base and isinstance(base[key], list) and isinstance(value, list):
            base[key] = base[key] + copy.deepcopy(value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def evaluate_mapping(mapping: ScopeMapping, user, provider, scope: list[str], log: Callable[[str], None]) -> Any:
    """Run one mapping; raises MappingError with the cause when the expression raises."""
    expr_user = ExprUser(user)
    context: dict[str, Any] = {
        "__builtins__": builtins,
        "request": ExprRequest(expr_user),
        "user": expr_user,
        "provider": ExprProvider(provider),
        "token": ExprToken(scope),
        "ak_logger": _ExprLogger(log, mapping.name),
        "regex_match": _regex_match,
        "regex_replace": _regex_replace,
        "list_flatten": _list_flatten,
        "ak_is_group_member": _ak_is_group_member,
    }
    try:
        exec(mapping.code, context)  # noqa: S102 - trusted test input, like authentik's evaluator
        return context[_FUNCTION_NAME]()
    except Exception as exc:  # authentik: PropertyMappingExpressionException
        raise MappingError(f"{type(exc).__name__}: {exc}") from exc


def claims_for(provider, user, scope: list[str], log: Callable[[str], None]) -> dict[str, Any]:
    """authentik's UserInfoView.get_claims: merge the claims of every mapping assigned
    to the provider whose scope was granted."""
    claims: dict[str, Any] = {}
    for mapping in provider.mappings_for(scope):
        try:
            value = evaluate_mapping(mapping, user, provider, scope, log)
        except MappingError as exc:
            log(f"Failed to evaluate property-mapping: {mapping.name!r} (scope {mapping.scope_name}): "
                f"{exc}; its claims are left out")
            continue
        if value is None:
            continue
        if not isinstance(value, dict):
            log(f"Scope mapping {mapping.name!r} returned a non-dict value "
                f"({type(value).__name__}), ignoring")
            continue
        try:
            value = _jsonable(value)
        except (TypeError, ValueError) as exc:
            log(f"Scope mapping {mapping.name!r} returned claims that are not JSON ({exc}), ignoring")
            continue
        deep_merge(claims, value)
    return claims
