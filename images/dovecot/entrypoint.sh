#!/bin/sh
# Makes a fresh mail volume usable and runs Dovecot in the foreground as PID 1.
set -eu

CONFIG=/etc/dovecot/dovecot.conf
MAIL_DIR=/var/mail

if [ ! -f "$CONFIG" ]; then
    echo "entrypoint: $CONFIG is missing; the program uploads it before start" >&2
    exit 1
fi
# It holds the OAuth client secret: root only. Dovecot's master reads it as
# root and hands the parsed settings to its other processes.
chown root:root "$CONFIG"
chmod 0600 "$CONFIG"

# A new named volume is filled from the image (owned by vmail); a bind mount
# or a volume made elsewhere may be owned by root. Only the top folder needs
# fixing: Dovecot creates the maildirs under it as vmail.
if [ "$(stat -c %U "$MAIL_DIR")" != vmail ]; then
    chown vmail:vmail "$MAIL_DIR"
    chmod 0770 "$MAIL_DIR"
fi

exec dovecot -F "$@"
