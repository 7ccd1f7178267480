"""authentik's directory API, as the directory sync reads it, and its test hooks.

Followed from authentik's source (core/api/users.py, core/api/groups.py,
api/pagination.py, api/authentication.py, rbac/filters.py; see
/tmp/research/authentik.md of the project's notes):

- ``GET /api/v3/core/users/`` and ``GET /api/v3/core/groups/``, authenticated with
  ``Authorization: Bearer <key>`` of a token with intent ``api`` whose user is
  active. No header: 403 "Authentication credentials were not provided."; an
  unknown, expired or non-api key, or an inactive user: 403 "Token
  invalid/expired" (DRF turns authentik's 401 into 403, as there is no
  WWW-Authenticate header). A user without the global permission
  ``authentik_core.view_user`` / ``view_group`` (from the roles of its groups, or
  a superuser group) gets 403 "You do not have permission to perform this
  action." (rbac ObjectFilter; the stand-in has no object permissions).
- Paging as 2025.12+: ``page`` (default 1; out of range: 404 "Invalid page."),
  ``page_size`` (default 20, at most 100; an unusable value falls back to 100,
  DRF's PAGE_SIZE), answer ``{"pagination": {next, previous, count, current,
  total_pages, start_index, end_index}, "results": [...], "autocomplete": {}}``;
  next/previous are page numbers, 0 for none.
- Users ordered by username, groups by name. Filters: ``is_active`` (Django's
  NullBooleanSelect: true/True/2 and false/False/3; anything else is ignored),
  ``groups_by_name`` (repeatable; an unknown name: 400 with django-filter's
  message), ``include_groups`` / ``include_users`` (default true; only "true",
  any case, includes the objects).

Test hooks (not authentik's), under ``/-/standin/``: add or update a user, add
or update a group, add or delete a token, and a fault switch for the two list
endpoints (``down``: the connection is reset, ``error``: HTTP 500,
``cut-paging``: pagination claims a page and a page's worth of results more
than it returns, ``none``).
"""

from __future__ import annotations

import dataclasses
import math
import socket
import struct
import threading
from typing import Any, Callable

from flask import Flask, Response, jsonify, request

from .config import Config, ConfigError, Group, Token, User, parse_group, parse_token, parse_user
from .tokens import GrantStore, fingerprint

DEFAULT_PAGE_SIZE = 20  # tenant pagination_default_page_size (authentik 2025.12+)
MAX_PAGE_SIZE = 100  # tenant pagination_max_page_size
DRF_PAGE_SIZE = 100  # REST_FRAMEWORK["PAGE_SIZE"]: DRF's fallback for an unusable page_size
FAULTS = ("none", "down", "error", "cut-paging")
# Timestamps the stand-in does not track; fixed so answers are stable.
EPOCH = "2025-01-01T00:00:00.000000Z"

NOT_PROVIDED = "Authentication credentials were not provided."
TOKEN_INVALID = "Token invalid/expired"
NO_PERMISSION = "You do not have permission to perform this action."

# Django's NullBooleanSelect.value_from_datadict
_NULL_BOOLEAN = {"2": True, "True": True, "true": True, "3": False, "False": False, "false": False}


class _ApiError(Exception):
    def __init__(self, status: int, body: dict[str, Any], reason: str):
        super().__init__(reason)
        self.status = status
        self.body = body
        self.reason = reason


class Directory:
    """The mutable part of the stand-in's authentik: users, groups, tokens, and the fault switch."""

    def __init__(self, config: Config, grants: GrantStore, log: Callable[[str], None]):
        self.config = config
        self.grants = grants
        self.log = log
        self.lock = threading.RLock()
        self.fault = "none"

    # -- tokens --------------------------------------------------------------------------

    def find_token(self, key: str, intent: str, username: str | None = None) -> tuple[Token | None, str]:
        """authentik's Token.filter_not_expired(key=..., intent=...[, user=...]).first():
        an expired match is deleted (as authentik does on use) and not found."""
        with self.lock:
            for token in list(self.config.tokens):
                if token.key != key or token.intent != intent:
                    continue
                if username is not None and token.user != username:
                    continue
                if token.is_expired():
                    self.config.tokens.remove(token)
                    return None, f"token {token.identifier} expired (deleted, as authentik does on use)"
                return token, ""
        return None, ""

    def token_summary(self, key: str) -> str:
        """What a key is, for a log line: the token's identifier and intent, never the key."""
        with self.lock:
            for token in self.config.tokens:
                if token.key == key:
                    return f"token {token.identifier} (intent {token.intent}, user {token.user})"
        return f"unknown key {fingerprint(key)}"

    # -- snapshots ------------------------------------------------------------------------

    def users_sorted(self) -> list[User]:
        with self.lock:
            return sorted(self.config.users, key=lambda u: u.username)

    def groups_sorted(self) -> list[Group]:
        with self.lock:
            return sorted(self.config.groups, key=lambda group: group.name)

    def members_by_group(self) -> dict[str, list[int]]:
        with self.lock:
            members: dict[str, list[int]] = {}
            for user in sorted(self.config.users, key=lambda u: u.pk):
                for name in user.groups:
                    members.setdefault(name, []).append(user.pk)
            return members

    # -- changes (test hooks) ------------------------------------------------------------------

    def add_user(self, raw: dict[str, Any]) -> User:
        with self.lock:
            pk = raw.get("pk")
            if pk is None:
                pk = self.config.next_user_pk()
            elif not isinstance(pk, int) or isinstance(pk, bool) or pk < 1:
                raise ConfigError("pk: expected a positive integer")
            user = parse_user(raw, "user", [], pk)
            if self.config.user_by_username(user.username) is not None:
                raise ConfigError(f"user {user.username!r} exists")
            if any(u.pk == pk for u in self.config.users):
                raise ConfigError(f"pk {pk} is taken")
            self.config.users.append(user)
            self.config.ensure_groups(user.groups)
            return user

    def update_user(self, username: str, changes: dict[str, Any]) -> tuple[User | None, str]:
        allowed = {"is_active", "email", "attributes", "groups", "name"}
        unknown = sorted(set(changes) - allowed)
        if unknown:
            raise ConfigError(f"cannot change {unknown}; can change {sorted(allowed)}")
        with self.lock:
            user = self.config.user_by_username(username)
            if user is None:
                return None, ""
            kinds = {"is_active": bool, "email": str, "attributes": dict, "groups": list, "name": str}
            for key, value in changes.items():
                if not isinstance(value, kinds[key]):
                    raise ConfigError(f"{key}: expected {kinds[key].__name__}")
            if "groups" in changes:
                if not all(isinstance(name, str) for name in changes["groups"]):
                    raise ConfigError("groups: expected a list of group names")
                changes = {**changes, "groups": tuple(changes["groups"])}
            updated = dataclasses.replace(user, **changes)
            self.config.users[self.config.users.index(user)] = updated
            self.config.ensure_groups(updated.groups)
            note = ""
            if user.is_active and not updated.is_active:
                # authentik's user_deactivated signal deletes the user's OAuth tokens.
                removed = self.grants.delete_user(user.username)
                note = f"; deactivated: {removed} OAuth token(s) deleted, as authentik does"
            return updated, note

    def put_group(self, name: str, raw: dict[str, Any]) -> tuple[Group, bool]:
        with self.lock:
            existing = self.config.group_by_name(name)
            merged: dict[str, Any] = {"name": name}
            if existing is not None:
                merged.update(pk=existing.pk, attributes=existing.attributes, is_superuser=existing.is_superuser,
                              roles=list(existing.roles))
            if "name" in raw and raw["name"] != name:
                raise ConfigError("the name is in the path; renaming is not supported")
            merged.update(raw)
            group = parse_group(merged, "group", [], self.config,
                                num_pk=existing.num_pk if existing is not None else None)
            if any(other.pk == group.pk and other.name != name for other in self.config.groups):
                raise ConfigError(f"pk {group.pk} is another group's")
            if existing is None:
                self.config.groups.append(group)
            else:
                self.config.groups[self.config.groups.index(existing)] = group
            return group, existing is None

    def add_token(self, raw: dict[str, Any]) -> Token:
        with self.lock:
            token = parse_token(raw, "token", [], self.config)
            if any(t.identifier == token.identifier for t in self.config.tokens):
                raise ConfigError(f"a token {token.identifier!r} exists")
            self.config.tokens.append(token)
            return token

    def delete_token(self, identifier: str) -> Token | None:
        with self.lock:
            for token in self.config.tokens:
                if token.identifier == identifier:
                    self.config.tokens.remove(token)
                    return token
        return None


# -- serializers (authentik's field names) ---------------------------------------------------


def serialize_user(config: Config, user: User, include_groups: bool) -> dict[str, Any]:
    groups = [config.group_by_name(name) for name in user.groups]
    present = [group for group in groups if group is not None]
    return {
        "pk": user.pk,
        "username": user.username,
        "name": user.name,
        "is_active": user.is_active,
        "last_login": None,
        "date_joined": EPOCH,
        "is_superuser": any(group.is_superuser for group in present),
        "groups": [group.pk for group in present],
        "groups_obj": [
            {"pk": group.pk, "num_pk": group.num_pk, "name": group.name, "is_superuser": group.is_superuser,
             "parent": None, "parent_name": None, "attributes": group.attributes}
            for group in present
        ] if include_groups else None,
        "email": user.email,
        "avatar": "/static/dist/assets/images/user_default.png",
        "attributes": user.attributes,
        "uid": user.uid,
        "path": user.path,
        "type": user.type,
        "uuid": user.uuid,
        "password_change_date": EPOCH,
        "last_updated": EPOCH,
    }


def serialize_group(config: Config, group: Group, members: list[int], users_by_pk: dict[int, User] | None
                    ) -> dict[str, Any]:
    roles = [config.role_by_name(name) for name in group.roles]
    return {
        "pk": group.pk,
        "num_pk": group.num_pk,
        "name": group.name,
        "is_superuser": group.is_superuser,
        "parent": None,
        "parent_name": None,
        "users": members,
        "users_obj": [
            {"pk": user.pk, "username": user.username, "name": user.name, "is_active": user.is_active,
             "last_login": None, "email": user.email, "attributes": user.attributes, "uid": user.uid}
            for user in (users_by_pk[pk] for pk in members)
        ] if users_by_pk is not None else None,
        "attributes": group.attributes,
        "roles": [role.pk for role in roles if role is not None],
        "roles_obj": [{"pk": role.pk, "name": role.name} for role in roles if role is not None],
        "children": [],
        "children_obj": None,
    }


# -- paging -------------------------------------------------------------------------------


def page_size_of(args) -> int:  # noqa: ANN001 - werkzeug MultiDict
    """authentik 2025.12+ Pagination.get_page_size (DRF's _positive_int, strict)."""
    if "page_size" not in args:
        return DEFAULT_PAGE_SIZE
    try:
        size = int(args.get("page_size"))
    except (TypeError, ValueError):
        size = 0
    if size <= 0:
        size = DRF_PAGE_SIZE
    return min(size, MAX_PAGE_SIZE)


def paginate(items: list[Any], args, cut: bool) -> tuple[list[Any], dict[str, int]]:  # noqa: ANN001
    """DRF's PageNumberPagination over Django's Paginator (allow_empty_first_page)."""
    size = page_size_of(args)
    count = len(items)
    total_pages = max(1, math.ceil(count / size))
    raw = args.get("page") or "1"
    if raw == "last":
        raw = str(total_pages)
    try:
        number = int(raw)
    except ValueError:
        raise _ApiError(404, {"detail": "Invalid page."}, f"page {raw!r} is not a number -> 404") from None
    if number < 1 or number > total_pages:
        raise _ApiError(404, {"detail": "Invalid page."}, f"page {number} of {total_pages} -> 404")
    start = (number - 1) * size
    results = items[start:start + size]
    pagination = {
        "next": number + 1 if number < total_pages else 0,
        "previous": number - 1 if number > 1 else 0,
        "count": count,
        "current": number,
        "total_pages": total_pages,
        "start_index": 0 if count == 0 else start + 1,
        "end_index": count if number == total_pages else number * size,
    }
    if cut:
        # The fault: the pagination claims one more page and a page's worth
        # more results than the pages deliver; the last real page says next 0.
        pagination["count"] = count + size
        pagination["total_pages"] = total_pages + 1
    return results, pagination


def _reset_connection() -> None:
    """The `down` fault: close the client's connection with a TCP reset, no answer."""
    sock = request.environ.get("werkzeug.socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def register(app: Flask, directory: Directory, decide: Callable[[str], None]) -> None:
    """Add the directory API and its test hooks to the stand-in's Flask app."""
    config = directory.config

    def authenticate(what: str) -> User:
        header = request.headers.get("Authorization", "")
        if not header:
            raise _ApiError(403, {"detail": NOT_PROVIDED}, "no Authorization header")
        scheme, _, key = header.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            # authentik 2025.12+: another scheme or an empty key authenticates nobody.
            raise _ApiError(403, {"detail": NOT_PROVIDED}, f"{scheme or 'empty'} credentials, not a bearer key")
        token, why = directory.find_token(key, "api")
        if token is None:
            raise _ApiError(403, {"detail": TOKEN_INVALID},
                            why or f"{directory.token_summary(key)} is not an API token")
        user = config.user_by_username(token.user)
        if user is None or not user.is_active:
            raise _ApiError(403, {"detail": TOKEN_INVALID}, f"token {token.identifier}: its user is inactive")
        permission = f"authentik_core.view_{what}"
        if not config.has_permission(user, permission):
            raise _ApiError(403, {"detail": NO_PERMISSION},
                            f"token {token.identifier} of {user.username}: no {permission}")
        return user

    def answer(kind: str, produce: Callable[[], tuple[dict[str, Any], str]]) -> Response:
        fault = directory.fault
        if fault == "down":
            _reset_connection()
            decide(f"api {kind}: fault 'down' -> connection reset")
            return Response("", status=500)
        if fault == "error":
            decide(f"api {kind}: fault 'error' -> 500")
            return Response("<h1>Server Error (500)</h1>", status=500, mimetype="text/html")
        try:
            body, note = produce()
        except _ApiError as error:
            decide(f"api {kind}: {error.reason} -> {error.status}")
            response = jsonify(error.body)
            response.status_code = error.status
            return response
        decide(f"api {kind}: {note}")
        return jsonify(body)

    def flag(name: str) -> bool:
        return str(request.args.get(name, "true")).lower() == "true"

    @app.get("/api/v3/core/users/")
    def users_list() -> Response:
        def produce() -> tuple[dict[str, Any], str]:
            caller = authenticate("user")
            users = directory.users_sorted()
            filters = []
            active = _NULL_BOOLEAN.get(request.args.get("is_active", ""))
            if active is not None:
                users = [u for u in users if u.is_active is active]
                filters.append(f"is_active={str(active).lower()}")
            names = request.args.getlist("groups_by_name")
            if names:
                for name in names:
                    if config.group_by_name(name) is None:
                        raise _ApiError(400, {"groups_by_name": [
                            f"Select a valid choice. {name} is not one of the available choices."]},
                            f"groups_by_name {name!r} is no group")
                wanted = set(names)
                users = [u for u in users if wanted.intersection(u.groups)]
                filters.append(f"groups_by_name={sorted(wanted)}")
            include = flag("include_groups")
            results, pagination = paginate(users, request.args, directory.fault == "cut-paging")
            body = {"pagination": pagination, "results": [serialize_user(config, u, include) for u in results],
                    "autocomplete": {}}
            return body, (f"{caller.username} {' '.join(filters) or 'all'}: page {pagination['current']}/"
                          f"{pagination['total_pages']} -> {len(results)} of {pagination['count']}")
        return answer("users", produce)

    @app.get("/api/v3/core/groups/")
    def groups_list() -> Response:
        def produce() -> tuple[dict[str, Any], str]:
            caller = authenticate("group")
            groups = directory.groups_sorted()
            members = directory.members_by_group()
            results, pagination = paginate(groups, request.args, directory.fault == "cut-paging")
            users_by_pk = None
            if flag("include_users"):
                users_by_pk = {u.pk: u for u in directory.users_sorted()}
            body = {"pagination": pagination,
                    "results": [serialize_group(config, group, members.get(group.name, []), users_by_pk)
                                for group in results],
                    "autocomplete": {}}
            return body, (f"{caller.username}: page {pagination['current']}/{pagination['total_pages']} "
                          f"-> {len(results)} of {pagination['count']}")
        return answer("groups", produce)

    # -- test hooks ---------------------------------------------------------------------------

    def hook_json() -> dict[str, Any]:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise ConfigError("expected a JSON object")
        return body

    def refused(what: str, error: ConfigError) -> Response:
        decide(f"{what}: refused: {error}")
        response = jsonify({"error": str(error)})
        response.status_code = 400
        return response

    @app.post("/-/standin/users/")
    def hook_add_user() -> Response:
        try:
            user = directory.add_user(hook_json())
        except ConfigError as error:
            return refused("add user", error)
        decide(f"add user: {user.username} (pk {user.pk}, email {user.email!r}, groups {list(user.groups)})")
        response = jsonify(serialize_user(config, user, True))
        response.status_code = 201
        return response

    @app.post("/-/standin/users/<username>/")
    def hook_update_user(username: str) -> Response:
        try:
            changes = hook_json()
            user, note = directory.update_user(username, changes)
        except ConfigError as error:
            return refused(f"update user {username}", error)
        if user is None:
            decide(f"update user: no user {username!r}")
            return Response("Not Found", status=404)
        decide(f"update user: {username}: {sorted(changes)}{note}")
        return jsonify(serialize_user(config, user, True))

    @app.post("/-/standin/groups/<name>/")
    def hook_put_group(name: str) -> Response:
        try:
            group, created = directory.put_group(name, hook_json())
        except ConfigError as error:
            return refused(f"group {name}", error)
        decide(f"{'add' if created else 'update'} group: {name} (pk {group.pk}, roles {list(group.roles)}, "
               f"attributes {sorted(group.attributes)})")
        response = jsonify(serialize_group(config, group, directory.members_by_group().get(name, []), None))
        response.status_code = 201 if created else 200
        return response

    @app.post("/-/standin/tokens/")
    def hook_add_token() -> Response:
        try:
            token = directory.add_token(hook_json())
        except ConfigError as error:
            return refused("add token", error)
        decide(f"add token: {token.identifier} (intent {token.intent}, user {token.user}, "
               f"expires {token.expires.isoformat() if token.expires else None}, expiring {token.expiring}, "
               f"key {fingerprint(token.key)})")
        response = jsonify({"identifier": token.identifier, "intent": token.intent, "user": token.user})
        response.status_code = 201
        return response

    @app.delete("/-/standin/tokens/<identifier>/")
    def hook_delete_token(identifier: str) -> Response:
        token = directory.delete_token(identifier)
        if token is None:
            decide(f"delete token: no token {identifier!r}")
            return Response("Not Found", status=404)
        decide(f"delete token: {identifier} (intent {token.intent}, user {token.user})")
        return Response("", status=204)

    @app.post("/-/standin/directory-fault/")
    def hook_fault() -> Response:
        body = request.get_json(silent=True)
        fault = body.get("fault") if isinstance(body, dict) else None
        if fault not in FAULTS:
            decide(f"directory fault: {fault!r} is not one of {FAULTS}")
            response = jsonify({"error": f"fault must be one of {list(FAULTS)}"})
            response.status_code = 400
            return response
        previous, directory.fault = directory.fault, fault
        decide(f"directory fault: {previous} -> {fault}")
        return jsonify({"fault": fault, "previous": previous})

