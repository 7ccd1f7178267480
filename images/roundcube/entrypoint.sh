#!/bin/sh
# Makes Roundcube's database ready, then runs Apache in the foreground as
# PID 1. The config's db_dsnw says which database:
#   sqlite:///...  creates the database in a fresh volume, brings an existing
#                  one up to the installed schema (one container);
#   pgsql://...    waits for PostgreSQL, then creates or updates the schema
#                  there under a lock (several replicas; database-setup.php).
set -eu

CONFIG=/etc/roundcube/config.inc.php
DB_DIR=/var/lib/roundcube/db
DB_FILE="$DB_DIR/roundcube.sqlite"
SCHEMA=/usr/share/roundcube/SQL/sqlite.initial.sql

if [ ! -f "$CONFIG" ]; then
    echo "entrypoint: $CONFIG is missing; the program uploads it before start" >&2
    exit 1
fi
# It holds the OAuth client secret and the DES key: uploaded as
# root:www-data, mode 0640, onto a read-only mount.

# Roundcube's temp_dir (its own temp files, the patches' session locks) is a
# tmpfs: a container's belongs to www-data already, a swarm task's to root
# (service tmpfs mounts take no owner).
TEMP_DIR=/var/lib/roundcube/temp
chmod 0750 "$TEMP_DIR"
chown www-data:www-data "$TEMP_DIR"

# Only the DSN's scheme is printed or compared, never the DSN (its password).
driver="$(php -r 'include "/etc/roundcube/config.inc.php";
    $dsn = (string) ($config["db_dsnw"] ?? "");
    echo strtolower(strstr($dsn, ":", true) ?: "");')"

case "$driver" in
sqlite|sqlite3)
    # sqlite writes its journal next to the database: the folder is Apache's.
    chown www-data:www-data "$DB_DIR"
    chmod 0750 "$DB_DIR"

    if [ ! -e "$DB_FILE" ]; then
        # Built under a temporary name and moved into place, so a failed run
        # never leaves a half-made database that the next start would keep.
        tmp="$DB_DIR/.roundcube.sqlite.new"
        rm -f "$tmp"
        sqlite3 -bail "$tmp" < "$SCHEMA"
        chown www-data:www-data "$tmp"
        chmod 0640 "$tmp"
        mv "$tmp" "$DB_FILE"
        echo "entrypoint: created $DB_FILE from $SCHEMA" >&2
    else
        # A newer image may bring a newer schema: migrate the kept database in
        # place (a no-op when it is current), as Apache's user who owns it.
        runuser -u www-data -- php /usr/share/roundcube/bin/updatedb.sh \
            --package=roundcube --dir=/usr/share/roundcube/SQL >&2
    fi
    ;;
pgsql)
    # As Apache's user, who reads the config too; at most 60 s for PostgreSQL.
    echo "entrypoint: db_dsnw is PostgreSQL: preparing the schema there" >&2
    runuser -u www-data -- /usr/local/bin/roundcube-database-setup --wait=60
    ;;
*)
    echo "entrypoint: db_dsnw in $CONFIG is neither sqlite:// nor pgsql://" >&2
    exit 1
    ;;
esac

# Debian's envvars reads unset variables: not under `set -u`.
set +u
. /etc/apache2/envvars
set -u
mkdir -p "$APACHE_RUN_DIR" "$APACHE_LOCK_DIR"
rm -f "$APACHE_PID_FILE"
exec apache2 -D FOREGROUND "$@"
