"""The stand-in's configuration: parsed from a JSON document, validated, typed.

The document mirrors what the Pulumi program declares in authentik (users,
scope mappings, applications with their OAuth2/OpenID provider). Keys the
stand-in does not know are reported by `Config.warnings` and otherwise ignored,
so a config that carries extra authentik fields (flows, ...) still loads.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from .mappings import MANAGED_SCOPE_EXPRESSIONS, ScopeMapping, compile_mapping

# authentik/lib/utils/time.py: ALLOWED_KEYS of timedelta_from_string.
_TIMEDELTA_KEYS = (
    "microseconds",
    "milliseconds",
    "seconds",
    "minutes",
    "hours",
    "days",
    "weeks",
)

SUB_MODES = (
    "hashed_user_id",
    "user_id",
    "user_uuid",
    "user_username",
    "user_email",
    "user_upn",
)
ISSUER_MODES = ("per_provider", "global")
CLIENT_TYPES = ("confidential", "public")
MATCHING_MODES = ("strict", "regex")


class ConfigError(ValueError):
    """The configuration document is not usable."""


def timedelta_from_string(expr: str) -> datetime.timedelta:
    """Parse authentik's validity syntax, e.g. ``hours=1;minutes=30``.

    Behaves like authentik's ``timedelta_from_string``: pairs are separated by
    ``;``, unknown keys are skipped, values may be fractional, and a string
    without any known key is an error.
    """
    kwargs: dict[str, float] = {}
    for pair in expr.split(";"):
        key, value = pair.split("=")  # ValueError on a malformed pair, as authentik
        if key.lower() not in _TIMEDELTA_KEYS:
            continue
        kwargs[key.lower()] = float(value.strip())
    if not kwargs:
        raise ValueError("No valid keys to pass to timedelta")
    return datetime.timedelta(**kwargs)


@dataclass(frozen=True)
class User:
    pk: int
    username: str
    name: str
    email: str
    password: str
    groups: tuple[str, ...]
    attributes: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def uid(self) -> str:
        """authentik's hashed user id (sha256 of an install id and the user's pk);
        the stand-in uses the username so that it is stable across restarts."""
        return hashlib.sha256(f"standin-{self.username}".encode()).hexdigest()

    @property
    def uuid(self) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"standin-user:{self.username}"))


@dataclass(frozen=True)
class RedirectURI:
    matching_mode: str
    url: str

    def matches(self, candidate: str) -> bool:
        if self.matching_mode == "strict":
            return candidate == self.url
        try:
            return re.fullmatch(self.url, candidate) is not None
        except re.error:
            return False


@dataclass
class Provider:
    name: str
    client_id: str
    client_secret: str
    client_type: str
    redirect_uris: list[RedirectURI]
    scope_names: list[str]
    access_code_validity: datetime.timedelta
    access_token_validity: datetime.timedelta
    refresh_token_validity: datetime.timedelta
    include_claims_in_id_token: bool
    sub_mode: str
    issuer_mode: str
    signing_key: bool
    allowed_group: str | None
    # Filled in from the application that uses the provider.
    slug: str = ""
    application_name: str = ""
    mappings: list[ScopeMapping] = field(default_factory=list)

    def mappings_for(self, scopes: list[str] | set[str]) -> list[ScopeMapping]:
        """Mappings assigned to this provider whose scope was granted, in
        authentik's order (by scope name)."""
        wanted = set(scopes)
        return sorted(
            (m for m in self.mappings if m.scope_name in wanted),
            key=lambda m: m.scope_name,
        )


@dataclass
class Application:
    name: str
    slug: str
    launch_url: str | None
    group: str | None
    provider: Provider


@dataclass
class Config:
    base_url: str
    listen_host: str
    listen_port: int
    cert_file: str | None
    key_file: str | None
    users: list[User]
    applications: list[Application]
    warnings: list[str] = field(default_factory=list)
    # Not authentik's: how long each answer takes (a real authentik takes ~30 ms), for benchmarks.
    answer_delay_ms: int = 0

    @property
    def providers(self) -> list[Provider]:
        return [app.provider for app in self.applications]

    def provider_by_client_id(self, client_id: str) -> Provider | None:
        for provider in self.providers:
            if provider.client_id == client_id:
                return provider
        return None

    def application_by_slug(self, slug: str) -> Application | None:
        for app in self.applications:
            if app.slug == slug:
                return app
        return None

    def find_user(self, uid_field: str) -> User | None:
        """Look a user up by username, or by e-mail (case-insensitive)."""
        for user in self.users:
            if user.username == uid_field:
                return user
        for user in self.users:
            if user.email and user.email.lower() == uid_field.lower():
                return user
        return None

    def user_by_username(self, username: str) -> User | None:
        for user in self.users:
            if user.username == username:
                return user
        return None


def load_config_file(path: str) -> Config:
    with open(path, encoding="utf-8") as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON: {exc}") from None
    return parse_config(data)


def _require(obj: dict, key: str, where: str, kind: type | tuple[type, ...] = str) -> Any:
    if key not in obj:
        raise ConfigError(f"{where}: missing '{key}'")
    value = obj[key]
    if not isinstance(value, kind):
        raise ConfigError(f"{where}.{key}: expected {kind}, got {type(value).__name__}")
    return value


def _optional(obj: dict, key: str, where: str, kind, default):
    value = obj.get(key, default)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise ConfigError(f"{where}.{key}: expected {kind}, got {type(value).__name__}")
    return value


def _note_unknown(obj: dict, known: set[str], where: str, warnings: list[str]) -> None:
    for key in sorted(set(obj) - known):
        warnings.append(f"{where}: unknown key '{key}' ignored")


def _validity(obj: dict, key: str, default: str, where: str) -> datetime.timedelta:
    raw = _optional(obj, key, where, str, default)
    try:
        delta = timedelta_from_string(raw)
    except ValueError as exc:
        raise ConfigError(f"{where}.{key}: {raw!r} is not a validity string "
                          f"like 'hours=1;minutes=2': {exc}") from None
    if delta.total_seconds() <= 0:
        raise ConfigError(f"{where}.{key}: must be positive")
    return delta


def parse_config(data: dict) -> Config:
    """Validate a config document (as loaded from JSON) and build a `Config`."""
    if not isinstance(data, dict):
        raise ConfigError("config: expected a JSON object")
    warnings: list[str] = []
    _note_unknown(
        data,
        {"base_url", "listen", "tls", "users", "scope_mappings", "applications", "answer_delay_ms"},
        "config",
        warnings,
    )
    base_url = _require(data, "base_url", "config").rstrip("/")
    if not re.match(r"^https?://[^/]+$", base_url):
        raise ConfigError(f"config.base_url: expected scheme://host[:port] without a path, got {base_url!r}")

    listen = _optional(data, "listen", "config", dict, {})
    listen_host = _optional(listen, "host", "config.listen", str, "127.0.0.1")
    listen_port = _optional(listen, "port", "config.listen", int, 9443)
    tls = _optional(data, "tls", "config", dict, {})
    cert_file = _optional(tls, "cert_file", "config.tls", str, None)
    key_file = _optional(tls, "key_file", "config.tls", str, None)

    users: list[User] = []
    seen_usernames: set[str] = set()
    for index, raw in enumerate(_optional(data, "users", "config", list, [])):
        where = f"config.users[{index}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected an object")
        _note_unknown(raw, {"username", "name", "email", "password", "groups", "attributes"}, where, warnings)
        username = _require(raw, "username", where)
        if username in seen_usernames:
            raise ConfigError(f"{where}: duplicate username {username!r}")
        seen_usernames.add(username)
        groups = _optional(raw, "groups", where, list, [])
        if not all(isinstance(g, str) for g in groups):
            raise ConfigError(f"{where}.groups: expected a list of group names")
        users.append(
            User(
                pk=index + 1,
                username=username,
                name=_optional(raw, "name", where, str, ""),
                email=_optional(raw, "email", where, str, ""),
                password=_require(raw, "password", where),
                groups=tuple(groups),
                attributes=_optional(raw, "attributes", where, dict, {}),
            )
        )

    custom: dict[str, list[ScopeMapping]] = {}
    for index, raw in enumerate(_optional(data, "scope_mappings", "config", list, [])):
        where = f"config.scope_mappings[{index}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected an object")
        _note_unknown(raw, {"name", "scope_name", "expression", "description"}, where, warnings)
        name = _require(raw, "name", where)
        scope_name = _require(raw, "scope_name", where)
        expression = _require(raw, "expression", where)
        try:
            mapping = compile_mapping(name, scope_name, expression)
        except SyntaxError as exc:
            # authentik refuses to save a mapping whose expression does not compile.
            raise ConfigError(f"{where} ({name}): expression does not compile: {exc}") from None
        custom.setdefault(scope_name, []).append(mapping)

    applications: list[Application] = []
    seen_slugs: set[str] = set()
    seen_client_ids: set[str] = set()
    for index, raw in enumerate(_optional(data, "applications", "config", list, [])):
        where = f"config.applications[{index}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected an object")
        _note_unknown(raw, {"name", "slug", "launch_url", "group", "provider"}, where, warnings)
        slug = _require(raw, "slug", where)
        if not re.fullmatch(r"[-a-zA-Z0-9_]+", slug):
            raise ConfigError(f"{where}.slug: {slug!r} is not a valid slug")
        if slug in seen_slugs:
            raise ConfigError(f"{where}: duplicate slug {slug!r}")
        seen_slugs.add(slug)
        provider = _parse_provider(_require(raw, "provider", where, dict), f"{where}.provider", custom, warnings)
        if provider.client_id in seen_client_ids:
            raise ConfigError(f"{where}.provider: duplicate client_id")
        seen_client_ids.add(provider.client_id)
        app_name = _optional(raw, "name", where, str, slug)
        provider.slug = slug
        provider.application_name = app_name
        applications.append(
            Application(
                name=app_name,
                slug=slug,
                launch_url=_optional(raw, "launch_url", where, str, None),
                group=_optional(raw, "group", where, str, None),
                provider=provider,
            )
        )

    return Config(
        base_url=base_url,
        listen_host=listen_host,
        listen_port=listen_port,
        cert_file=cert_file,
        key_file=key_file,
        users=users,
        applications=applications,
        warnings=warnings,
        answer_delay_ms=_answer_delay(data),
    )


def _answer_delay(data: dict) -> int:
    delay = _optional(data, "answer_delay_ms", "config", int, 0)
    if not 0 <= delay <= 10000:
        raise ConfigError(f"config.answer_delay_ms: must be 0 to 10000, got {delay}")
    return delay


_PROVIDER_KEYS = {
    "name", "client_id", "client_secret", "client_type", "allowed_redirect_uris",
    "scopes", "access_code_validity", "access_token_validity", "refresh_token_validity",
    "include_claims_in_id_token", "sub_mode", "issuer_mode", "signing_key", "allowed_group",
}


def _parse_provider(raw: dict, where: str, custom: dict[str, list[ScopeMapping]], warnings: list[str]) -> Provider:
    _note_unknown(raw, _PROVIDER_KEYS, where, warnings)
    client_type = _optional(raw, "client_type", where, str, "confidential")
    if client_type not in CLIENT_TYPES:
        raise ConfigError(f"{where}.client_type: expected one of {CLIENT_TYPES}")
    sub_mode = _optional(raw, "sub_mode", where, str, "hashed_user_id")
    if sub_mode not in SUB_MODES:
        raise ConfigError(f"{where}.sub_mode: expected one of {SUB_MODES}")
    issuer_mode = _optional(raw, "issuer_mode", where, str, "per_provider")
    if issuer_mode not in ISSUER_MODES:
        raise ConfigError(f"{where}.issuer_mode: expected one of {ISSUER_MODES}")

    redirect_uris: list[RedirectURI] = []
    for index, entry in enumerate(_optional(raw, "allowed_redirect_uris", where, list, [])):
        entry_where = f"{where}.allowed_redirect_uris[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{entry_where}: expected {{matching_mode, url}}")
        if "matchingMode" in entry and "matching_mode" not in entry:  # as Pulumi records the input
            entry = {**entry, "matching_mode": entry["matchingMode"]}
            del entry["matchingMode"]
        _note_unknown(entry, {"matching_mode", "url"}, entry_where, warnings)
        mode = _optional(entry, "matching_mode", entry_where, str, "strict")
        if mode not in MATCHING_MODES:
            raise ConfigError(f"{entry_where}.matching_mode: expected one of {MATCHING_MODES}")
        url = _require(entry, "url", entry_where)
        if mode == "regex":
            try:
                re.compile(url)
            except re.error as exc:
                warnings.append(f"{entry_where}: invalid regular expression ({exc}); it never matches")
        redirect_uris.append(RedirectURI(mode, url))

    scope_names = _optional(raw, "scopes", where, list, [])
    mappings: list[ScopeMapping] = []
    for scope_name in scope_names:
        if not isinstance(scope_name, str):
            raise ConfigError(f"{where}.scopes: expected a list of scope names")
        if scope_name in custom:
            mappings.extend(custom[scope_name])
        elif scope_name in MANAGED_SCOPE_EXPRESSIONS:
            name, expression = MANAGED_SCOPE_EXPRESSIONS[scope_name]
            mappings.append(compile_mapping(name, scope_name, expression, managed=True))
        else:
            raise ConfigError(
                f"{where}.scopes: no scope mapping with scope_name {scope_name!r} "
                f"(built in: {sorted(MANAGED_SCOPE_EXPRESSIONS)}; add it to scope_mappings)"
            )

    signing_key = raw.get("signing_key", True)
    allowed_group = raw.get("allowed_group")
    if allowed_group is not None and not isinstance(allowed_group, str):
        raise ConfigError(f"{where}.allowed_group: expected a group name or null")

    include = raw.get("include_claims_in_id_token", True)
    if not isinstance(include, bool):
        raise ConfigError(f"{where}.include_claims_in_id_token: expected true or false")

    return Provider(
        name=_optional(raw, "name", where, str, ""),
        client_id=_require(raw, "client_id", where),
        client_secret=_optional(raw, "client_secret", where, str, ""),
        client_type=client_type,
        redirect_uris=redirect_uris,
        scope_names=list(scope_names),
        access_code_validity=_validity(raw, "access_code_validity", "minutes=1", where),
        access_token_validity=_validity(raw, "access_token_validity", "hours=1", where),
        refresh_token_validity=_validity(raw, "refresh_token_validity", "days=30", where),
        include_claims_in_id_token=include,
        sub_mode=sub_mode,
        issuer_mode=issuer_mode,
        signing_key=bool(signing_key),
        allowed_group=allowed_group,
        mappings=mappings,
    )
