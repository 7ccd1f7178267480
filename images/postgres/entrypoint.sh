#!/bin/sh
# PostgreSQL for Roundcube, as the postgres user (the image's USER):
#   - an empty volume gets a new cluster (UTF8, C.UTF-8), a role `roundcube`
#     and its database `roundcube`;
#   - on every start the role's password is set from the secret file, so a
#     new secret and a restart rotate it; the server opens its TCP port only
#     after that;
#   - then PostgreSQL runs in the foreground as PID 1, logging to stderr.
# The password never reaches a command line or a log: it goes to psql on
# its standard input, to a server that listens on no port and logs no
# statement.
set -eu

PG_MAJOR=17
VOLUME=/var/lib/postgresql/data
# The cluster lives in a folder named after the major version: an upgrade
# (pg_upgrade) can put the next one beside it in the same volume.
CLUSTER="$VOLUME/$PG_MAJOR"
CONF=/etc/postgresql/roundcube-authentik/postgresql.conf
SOCKET_DIR=/run/postgresql
SECRET=/run/secrets/roundcube-db-password
ROLE=roundcube
DATABASE=roundcube

log() { echo "entrypoint: $*" >&2; }

if [ "$(id -u)" != "$(id -u postgres)" ]; then
    log "runs as the postgres user (uid $(id -u postgres)), not uid $(id -u); keep the image's USER"
    exit 1
fi
if [ ! -O "$VOLUME" ] || [ ! -w "$VOLUME" ]; then
    log "$VOLUME belongs to uid $(stat -c %u "$VOLUME"), not to postgres (uid $(id -u)): chown the volume to $(id -u):$(id -g) once"
    exit 1
fi
if [ ! -w "$SOCKET_DIR" ]; then
    log "$SOCKET_DIR is not writable by postgres: mount a tmpfs there owned by uid $(id -u), or world-writable (mode 1777)"
    exit 1
fi
if [ ! -r "$SECRET" ]; then
    log "$SECRET is missing or not readable by the postgres user (uid $(id -u)); it holds roundcube's database password"
    exit 1
fi
# One line; a trailing carriage return (a file written on Windows) is not part of it.
password=
IFS= read -r password < "$SECRET" || true
password="${password%"$(printf '\r')"}"
if [ -z "$password" ]; then
    log "$SECRET is empty; it holds roundcube's database password"
    exit 1
fi
# base64's alphabet needs no quoting in SQL; printf is the shell's own
# (no process whose arguments would show the password).
encoded="$(printf '%s' "$password" | base64 -w0)"
unset password

for other in "$VOLUME"/*/PG_VERSION; do
    [ -e "$other" ] || continue
    major="$(cat "$other")"
    if [ "$major" != "$PG_MAJOR" ] && [ ! -e "$CLUSTER/PG_VERSION" ]; then
        log "the volume holds a PostgreSQL $major cluster ($(dirname "$other")) and no $PG_MAJOR one: upgrade it with pg_upgrade first"
        exit 1
    fi
done

# A server for this script alone: no TCP port, no statement in its log.
temporary_start() {
    started="$1"
    pg_ctl --pgdata="$1" --wait --timeout=300 --silent \
        --options="-c config_file=$CONF -c listen_addresses='' -c log_min_error_statement=panic -c log_statement=none" \
        start
}
temporary_stop() {
    pg_ctl --pgdata="$started" --mode=fast --wait --timeout=60 --silent stop
    started=
}
started=
# Whatever ends this script early (an error, docker stop) stops that server too.
trap '[ -z "$started" ] || pg_ctl --pgdata="$started" --mode=fast --silent stop >/dev/null 2>&1 || true' EXIT
trap 'exit 1' INT TERM

as_postgres_sql() {
    psql --no-psqlrc --quiet --no-password --set=ON_ERROR_STOP=1 --host="$SOCKET_DIR" --username=postgres --dbname=postgres
}

set_password() {
    # \gexec runs the statement the SELECT builds: the password quoted as a literal by format(%L).
    as_postgres_sql >/dev/null <<SQL
\set encoded '$encoded'
SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', '$ROLE', convert_from(decode(:'encoded', 'base64'), 'UTF8')) \gexec
SQL
}

if [ ! -e "$CLUSTER/PG_VERSION" ]; then
    # Built under a temporary name and renamed when complete, so a failed
    # run never leaves a half-made cluster that the next start would keep.
    new="$VOLUME/.$PG_MAJOR.new"
    rm -rf "$new"
    initdb --pgdata="$new" --username=postgres --encoding=UTF8 \
        --locale-provider=builtin --builtin-locale=C.UTF-8 --locale=C.UTF-8 \
        --data-checksums --auth-local=peer --auth-host=scram-sha-256 >/dev/null
    temporary_start "$new"
    as_postgres_sql >/dev/null <<SQL
CREATE ROLE "$ROLE" LOGIN;
CREATE DATABASE "$DATABASE" OWNER "$ROLE";
SQL
    set_password
    temporary_stop
    mv "$new" "$CLUSTER"
    log "created a PostgreSQL $PG_MAJOR cluster in $CLUSTER (UTF8, C.UTF-8) with role $ROLE and database $DATABASE; password from $SECRET"
else
    temporary_start "$CLUSTER"
    set_password
    temporary_stop
    log "set the password of role $ROLE from $SECRET"
fi
trap - EXIT INT TERM

log "starting PostgreSQL $PG_MAJOR on port 5432"
exec postgres -D "$CLUSTER" -c config_file="$CONF"
