#!/bin/sh
set -eu
exec apache2ctl -D FOREGROUND
