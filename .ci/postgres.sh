#!/usr/bin/env bash
# Start a PostgreSQL server on 127.0.0.1 for the storage tests and print its URL.
# Installs Debian's postgresql package when the machine lacks it.
set -euo pipefail
if ! command -v pg_lsclusters >/dev/null 2>&1 || [ -z "$(pg_lsclusters -h 2>/dev/null)" ]; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi
if [ -z "$(pg_lsclusters -h 2>/dev/null)" ]; then   # installed, but its cluster was dropped
  pg_createcluster "$(ls /usr/lib/postgresql | sort -V | tail -n 1)" main >&2
fi
read -r version cluster port _ < <(pg_lsclusters -h | head -n 1)
pg_ctlcluster "$version" "$cluster" start >&2 2>/dev/null || true   # already running is fine
for _ in $(seq 30); do
  su postgres -c "pg_isready -q -h 127.0.0.1 -p $port" && break
  sleep 1
done
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='supportbot'\"" | grep -q 1 ||
  su postgres -c "psql -qc \"CREATE ROLE supportbot LOGIN PASSWORD 'supportbot'\"" >&2
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname='supportbot_test'\"" | grep -q 1 ||
  su postgres -c "createdb -O supportbot supportbot_test" >&2
echo "postgresql+asyncpg://supportbot:supportbot@127.0.0.1:${port}/supportbot_test"
