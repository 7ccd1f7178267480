#!/bin/sh
# Checks the uploaded configuration and key, then runs OpenDKIM in the
# foreground as PID 1: if it dies, the container stops and Docker restarts it.
set -eu

if [ ! -f /etc/opendkim/opendkim.conf ]; then
    echo "entrypoint: /etc/opendkim/opendkim.conf is missing; the program uploads it before start" >&2
    exit 1
fi
# -n: parse the configuration and load the key, then exit (errors to stderr).
opendkim -n -x /etc/opendkim/opendkim.conf
# OpenDKIM logs only through syslog(3): a small syslogd on /dev/log passes its
# lines to the container's log (docker logs).
busybox syslogd -n -O /dev/stdout &
echo "entrypoint: opendkim configuration accepted; starting"
exec opendkim -f -x /etc/opendkim/opendkim.conf
