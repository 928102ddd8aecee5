#!/usr/bin/env bash
# Installs and starts what the test suites need: PostgreSQL and nats-server (cluster tests),
# Debian's Chromium (browser tests). A service that cannot be brought up fails the run.
set -euo pipefail

need_apt=()
command -v psql >/dev/null || need_apt+=(postgresql postgresql-client)
command -v nats-server >/dev/null || need_apt+=(nats-server)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v node >/dev/null || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  echo "== starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start \
    || /etc/init.d/postgresql start
  for _ in $(seq 1 50); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 0.2; done
fi
pg_isready -h 127.0.0.1 -p 5432 || { echo "PostgreSQL is not running on 127.0.0.1:5432" >&2; exit 1; }
psql "postgres://postgres@127.0.0.1:5432/postgres" -qAtc 'SELECT 1' >/dev/null \
  || { echo "cannot connect to PostgreSQL as postgres (trust auth expected)" >&2; exit 1; }

# The cluster tests start their own nats-server on free ports; only the binary is needed.
nats-server --version >/dev/null || { echo "nats-server is missing" >&2; exit 1; }
