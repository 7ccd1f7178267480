#!/bin/sh
# Checks the uploaded configuration, repairs the spool's owners and modes and
# runs Postfix in the foreground as PID 1 (logging to stdout, see main.cf).
set -eu

for file in /etc/postfix/main.cf /etc/postfix/master.cf; do
    if [ ! -f "$file" ]; then
        echo "entrypoint: $file is missing; the program uploads it before start" >&2
        exit 1
    fi
done

# The spool is a volume: a fresh one, or one left by an older image whose
# postfix / postdrop ids differ, gets its owners and modes set here.
postfix set-permissions
postfix check

exec postfix start-fg
