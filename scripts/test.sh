#!/usr/bin/env bash
# The whole test suite, from a fresh clone, as root on Debian:
#   bash scripts/test.sh [pytest args]
# Creates .venv, installs the pinned dependencies, installs Chromium and a
# Docker engine from Debian when missing, starts the engine (and stops it
# again at the end if this script started it), imports the Debian trixie base
# image when the engine lacks it, then runs pytest over tests/.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

need_apt=()
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v unshare >/dev/null || need_apt+=(util-linux)
command -v node >/dev/null || need_apt+=(nodejs)              # runs the PR-comment script in tests
command -v ssh-agent >/dev/null || need_apt+=(openssh-client)  # the deploy workflow's ssh-agent steps
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt

trap 'bash scripts/docker-engine.sh stop' EXIT
bash scripts/docker-engine.sh start

.venv/bin/python -m pytest "$@"
