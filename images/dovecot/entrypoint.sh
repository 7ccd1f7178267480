#!/bin/sh
# Makes a fresh mail volume usable and runs Dovecot in the foreground as PID 1.
set -eu

CONFIG=/etc/dovecot/dovecot.conf
JWKS_SYNC_CONFIG=/etc/dovecot/jwks-sync.json
INTROSPECTION_FILTER_CONFIG=/etc/dovecot/introspection-filter.json
APP_PASSWORD_CHECK_CONFIG=/etc/dovecot/app-password-check.json
MAIL_DIR=/var/mail

if [ ! -f "$CONFIG" ]; then
    echo "entrypoint: $CONFIG is missing; the program uploads it before start" >&2
    exit 1
fi
# It holds the OAuth client secret: uploaded root-owned, mode 0600, onto a
# read-only mount. Dovecot's master reads it as root and hands the parsed
# settings to its other processes.

# A new named volume is filled from the image (owned by vmail); a bind mount
# or a volume made elsewhere may be owned by root. Only the top folder needs
# fixing: Dovecot creates the maildirs under it as vmail.
if [ "$(stat -c %U "$MAIL_DIR")" != vmail ]; then
    chown vmail:vmail "$MAIL_DIR"
    chmod 0770 "$MAIL_DIR"
fi

# Local token validation: fetch authentik's signing keys before the first
# login, then keep them current in the background (jwks-sync.py). A failed
# first fetch does not stop Dovecot: it starts with the keys it has and the
# loop retries.
if [ -f "$JWKS_SYNC_CONFIG" ]; then
    jwks-sync "$JWKS_SYNC_CONFIG" --once || echo "entrypoint: first key fetch failed; retrying in the background" >&2
    jwks-sync "$JWKS_SYNC_CONFIG" &
fi
# Introspection: a loopback filter refuses non-JWTs (refresh tokens) and
# passes the rest to authentik (introspection-filter.py); it returns once it
# listens.
if [ -f "$INTROSPECTION_FILTER_CONFIG" ]; then
    introspection-filter "$INTROSPECTION_FILTER_CONFIG"
fi
# App passwords (PLAIN/LOGIN): Dovecot's Lua passdb (app-password.lua) asks a
# loopback checker (app-password-check.py), which asks authentik. It reads
# its config (the client secret) as root, then runs as nobody; it returns
# once it listens.
if [ -f "$APP_PASSWORD_CHECK_CONFIG" ]; then
    app-password-check "$APP_PASSWORD_CHECK_CONFIG"
fi

exec dovecot -F "$@"
