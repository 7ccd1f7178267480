#!/bin/sh
# Makes a fresh mail volume usable and runs Dovecot in the foreground as PID 1.
set -eu

MAIL_DIR=/var/mail

# A new named volume is filled from the image (owned by vmail); a bind mount or
# a volume created elsewhere may be owned by root. Fix only the top folder:
# the maildirs under it are created by Dovecot as vmail.
if [ "$(stat -c %U "$MAIL_DIR")" != vmail ]; then
    chown vmail:vmail "$MAIL_DIR"
    chmod 0770 "$MAIL_DIR"
fi

# The uploaded config holds the OAuth client secret: root only. Dovecot's
# master reads it as root and hands the parsed settings to its children.
chown root:root /etc/dovecot/dovecot.conf
chmod 0600 /etc/dovecot/dovecot.conf

exec dovecot -F "$@"
