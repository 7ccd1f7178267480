#!/bin/sh
# Checks the uploaded configuration, repairs the spool's ownership and runs
# Postfix in the foreground as PID 1 (logging to stdout, see main.cf).
set -eu

# The spool is a volume: a fresh one, or one from an older image whose
# postfix/postdrop ids differ, needs its owners and modes set.
postfix set-permissions
postfix check

exec postfix start-fg
