#!/bin/sh
# Checks the uploaded configuration and runs Postfix in the foreground as PID 1 (logging to stdout, see main.cf).
set -eu

for file in /etc/postfix/main.cf /etc/postfix/master.cf; do
    if [ ! -f "$file" ]; then
        echo "entrypoint: $file is missing; the program uploads it before start" >&2
        exit 1
    fi
done

# Postfix's data folder (master.lock, TLS session caches) is a tmpfs: a
# container's belongs to postfix already, a swarm task's to root (service
# tmpfs mounts take no owner), and the master locks it as postfix.
chmod 0755 /var/lib/postfix
chown postfix:postfix /var/lib/postfix

# The root filesystem is read-only. `postfix check` creates the queue
# folders a fresh spool volume lacks (owned by the pinned postfix / postdrop
# ids) and reports wrong owners or modes.
postfix check

exec postfix start-fg
