#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine, then runs the whole suite:
# system packages (sshd for the SSH fleet, PostgreSQL for the database tests, Graphviz for
# `release graph --format svg`), and a virtualenv in .venv with the project and its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
command -v dot >/dev/null || need+=(graphviz)
command -v ip >/dev/null || need+=(iproute2)
command -v unshare >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing system packages: ${need[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
# An editable install has no bytecode, and with PYTHONDONTWRITEBYTECODE set every `release` the
# tests start would compile the package again.
.venv/bin/python -m compileall -q orchestrator >/dev/null
exec .venv/bin/python -m pytest -q "$@"
