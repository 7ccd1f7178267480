"""The stand-in's configuration: parsed from a JSON document, validated, typed.

The document mirrors what the Pulumi program declares in authentik (users,
scope mappings, applications with their OAuth2/OpenID provider) and, for the
directory API, groups, roles and tokens. Keys the stand-in does not know are
reported by `Config.warnings` and otherwise ignored, so a config that carries
extra authentik fields (flows, ...) still loads. Every key added for the
directory API is optional:

    users[]:  pk (int; default: a free number from the user's position),
              is_active (default true), attributes, type ("internal"), path ("users")
    groups[]: name, pk (a UUID; default: a stable uuid5 of the name), attributes,
              is_superuser (false), roles (role names)
    roles[]:  name, permissions (e.g. "authentik_core.view_user")
    tokens[]: identifier, key, user (a username), intent ("api" | "app_password" |
              "verification" | "recovery"), expires (ISO 8601 or null), expiring (true)

Membership stays on users (`groups: [names]`); a group named there but not
declared exists with no attributes and no roles.
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
USER_TYPES = ("internal", "external", "service_account", "internal_service_account")
TOKEN_INTENTS = ("verification", "api", "recovery", "app_password")


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
    is_active: bool = True
    type: str = "internal"
    path: str = "users"

    @property
    def uid(self) -> str:
        """authentik's hashed user id (sha256 of an install id and the user's pk);
        the stand-in uses the username so that it is stable across restarts."""
        return hashlib.sha256(f"standin-{self.username}".encode()).hexdigest()

    @property
    def uuid(self) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"standin-user:{self.username}"))


def stable_uuid(kind: str, name: str) -> str:
    """A UUID that stays the same for the same name across restarts."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"standin-{kind}:{name}"))


@dataclass(frozen=True)
class Group:
    """An authentik group; its pk is a UUID string, as authentik's `group_uuid`."""

    name: str
    pk: str
    num_pk: int
    attributes: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    is_superuser: bool = False
    roles: tuple[str, ...] = ()


@dataclass(frozen=True)
class Role:
    name: str
    pk: str
    permissions: tuple[str, ...] = ()


@dataclass(frozen=True)
class Token:
    """authentik's core Token: an API token (intent api) or an app password."""

    identifier: str
    key: str
    user: str  # username
    intent: str
    expires: datetime.datetime | None = None
    expiring: bool = True

    def is_expired(self, now: datetime.datetime | None = None) -> bool:
        """authentik's ExpiringModel: expired when expiring and expires is in the past
        (expiring with no expires is not expired on use)."""
        if not self.expiring or self.expires is None:
            return False
        return self.expires < (now or datetime.datetime.now(datetime.timezone.utc))


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
    groups: list[Group] = field(default_factory=list)
    roles: list[Role] = field(default_factory=list)
    tokens: list[Token] = field(default_factory=list)

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

    def group_by_name(self, name: str) -> Group | None:
        for group in self.groups:
            if group.name == name:
                return group
        return None

    def role_by_name(self, name: str) -> Role | None:
        for role in self.roles:
            if role.name == name:
                return role
        return None

    def ensure_groups(self, names: list[str] | tuple[str, ...]) -> None:
        """Groups named by a user but not declared exist, bare (as the program's
        allowed group does in authentik)."""
        for name in names:
            if self.group_by_name(name) is None:
                self.groups.append(Group(name=name, pk=stable_uuid("group", name), num_pk=self.next_group_num()))

    def next_group_num(self) -> int:
        return max((g.num_pk for g in self.groups), default=0) + 1

    def next_user_pk(self) -> int:
        return max((u.pk for u in self.users), default=0) + 1

    def permissions_of(self, user: User) -> set[str]:
        """The global permissions a user holds through its groups' roles; "*" for
        a member of a superuser group."""
        granted: set[str] = set()
        for name in user.groups:
            group = self.group_by_name(name)
            if group is None:
                continue
            if group.is_superuser:
                return {"*"}
            for role_name in group.roles:
                role = self.role_by_name(role_name)
                if role is not None:
                    granted.update(role.permissions)
        return granted

    def has_permission(self, user: User, permission: str) -> bool:
        granted = self.permissions_of(user)
        return "*" in granted or permission in granted


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
        {"base_url", "listen", "tls", "users", "scope_mappings", "applications", "answer_delay_ms",
         "groups", "roles", "tokens"},
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

    raw_users = _optional(data, "users", "config", list, [])
    explicit_pks: set[int] = set()
    for index, raw in enumerate(raw_users):
        if isinstance(raw, dict) and raw.get("pk") is not None:
            pk = raw["pk"]
            if not isinstance(pk, int) or isinstance(pk, bool) or pk < 1:
                raise ConfigError(f"config.users[{index}].pk: expected a positive integer")
            if pk in explicit_pks:
                raise ConfigError(f"config.users[{index}]: duplicate pk {pk}")
            explicit_pks.add(pk)
    users: list[User] = []
    seen_usernames: set[str] = set()
    used_pks = set(explicit_pks)
    for index, raw in enumerate(raw_users):
        where = f"config.users[{index}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected an object")
        pk = raw.get("pk")
        if pk is None:  # the user's position, as before; the next free number when taken
            pk = index + 1
            while pk in used_pks:
                pk += 1
            used_pks.add(pk)
        user = parse_user(raw, where, warnings, pk)
        if user.username in seen_usernames:
            raise ConfigError(f"{where}: duplicate username {user.username!r}")
        seen_usernames.add(user.username)
        users.append(user)

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

    roles: list[Role] = []
    for index, raw in enumerate(_optional(data, "roles", "config", list, [])):
        where = f"config.roles[{index}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected an object")
        _note_unknown(raw, {"name", "permissions"}, where, warnings)
        name = _require(raw, "name", where)
        if any(r.name == name for r in roles):
            raise ConfigError(f"{where}: duplicate role {name!r}")
        permissions = _optional(raw, "permissions", where, list, [])
        if not all(isinstance(p, str) and re.fullmatch(r"[a-z_]+\.[a-z_]+", p) for p in permissions):
            raise ConfigError(f"{where}.permissions: expected names like 'authentik_core.view_user'")
        roles.append(Role(name=name, pk=stable_uuid("role", name), permissions=tuple(permissions)))

    config = Config(
        base_url=base_url,
        listen_host=listen_host,
        listen_port=listen_port,
        cert_file=cert_file,
        key_file=key_file,
        users=users,
        applications=applications,
        warnings=warnings,
        answer_delay_ms=_answer_delay(data),
        roles=roles,
    )
    for index, raw in enumerate(_optional(data, "groups", "config", list, [])):
        group = parse_group(raw, f"config.groups[{index}]", warnings, config)
        if config.group_by_name(group.name) is not None:
            raise ConfigError(f"config.groups[{index}]: duplicate group {group.name!r}")
        if any(g.pk == group.pk for g in config.groups):
            raise ConfigError(f"config.groups[{index}]: duplicate pk {group.pk}")
        config.groups.append(group)
    for user in users:
        config.ensure_groups(user.groups)
    for app in applications:
        if app.provider.allowed_group is not None:
            config.ensure_groups([app.provider.allowed_group])
    for index, raw in enumerate(_optional(data, "tokens", "config", list, [])):
        token = parse_token(raw, f"config.tokens[{index}]", warnings, config)
        if any(t.identifier == token.identifier for t in config.tokens):
            raise ConfigError(f"config.tokens[{index}]: duplicate identifier {token.identifier!r}")
        config.tokens.append(token)
    return config


_USER_KEYS = {"username", "name", "email", "password", "groups", "attributes", "pk", "is_active", "type", "path"}


def parse_user(raw: object, where: str, warnings: list[str], pk: int) -> User:
    """One user of the config document (or of the stand-in's add-user hook)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected an object")
    _note_unknown(raw, _USER_KEYS, where, warnings)
    username = _require(raw, "username", where)
    groups = _optional(raw, "groups", where, list, [])
    if not all(isinstance(g, str) for g in groups):
        raise ConfigError(f"{where}.groups: expected a list of group names")
    user_type = _optional(raw, "type", where, str, "internal")
    if user_type not in USER_TYPES:
        raise ConfigError(f"{where}.type: expected one of {USER_TYPES}")
    return User(
        pk=pk,
        username=username,
        name=_optional(raw, "name", where, str, ""),
        email=_optional(raw, "email", where, str, ""),
        password=_require(raw, "password", where),
        groups=tuple(groups),
        attributes=_optional(raw, "attributes", where, dict, {}),
        is_active=_optional(raw, "is_active", where, bool, True),
        type=user_type,
        path=_optional(raw, "path", where, str, "users"),
    )


def parse_group(raw: object, where: str, warnings: list[str], config: Config, num_pk: int | None = None) -> Group:
    """One group of the config document (or of the stand-in's group hook)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected an object")
    _note_unknown(raw, {"name", "pk", "attributes", "is_superuser", "roles"}, where, warnings)
    name = _require(raw, "name", where)
    pk = _optional(raw, "pk", where, str, None) or stable_uuid("group", name)
    try:
        pk = str(uuid.UUID(pk))
    except ValueError:
        raise ConfigError(f"{where}.pk: expected a UUID, got {pk!r}") from None
    roles = _optional(raw, "roles", where, list, [])
    for role in roles:
        if not isinstance(role, str) or config.role_by_name(role) is None:
            raise ConfigError(f"{where}.roles: {role!r} is not a role of config.roles")
    return Group(
        name=name,
        pk=pk,
        num_pk=num_pk if num_pk is not None else config.next_group_num(),
        attributes=_optional(raw, "attributes", where, dict, {}),
        is_superuser=_optional(raw, "is_superuser", where, bool, False),
        roles=tuple(roles),
    )


def parse_token(raw: object, where: str, warnings: list[str], config: Config) -> Token:
    """One token of the config document (or of the stand-in's add-token hook)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected an object")
    _note_unknown(raw, {"identifier", "key", "user", "intent", "expires", "expiring", "description"}, where, warnings)
    identifier = _require(raw, "identifier", where)
    if not re.fullmatch(r"[-a-zA-Z0-9_]+", identifier):
        raise ConfigError(f"{where}.identifier: {identifier!r} is not a slug")
    key = _require(raw, "key", where)
    if not key:
        raise ConfigError(f"{where}.key: must not be empty")
    username = _require(raw, "user", where)
    if config.user_by_username(username) is None:
        raise ConfigError(f"{where}.user: no user {username!r}")
    intent = _optional(raw, "intent", where, str, "verification")
    if intent not in TOKEN_INTENTS:
        raise ConfigError(f"{where}.intent: expected one of {TOKEN_INTENTS}")
    expires_raw = _optional(raw, "expires", where, str, None)
    expires = None
    if expires_raw is not None:
        try:
            expires = datetime.datetime.fromisoformat(expires_raw.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(f"{where}.expires: not an ISO 8601 time: {expires_raw!r}") from None
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=datetime.timezone.utc)
    return Token(
        identifier=identifier,
        key=key,
        user=username,
        intent=intent,
        expires=expires,
        expiring=_optional(raw, "expiring", where, bool, True),
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
