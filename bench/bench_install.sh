#!/usr/bin/env bash
# Fresh clone to first answer: the seconds from `make serve` in a new clone (new venv, empty pip
# cache) to the server answering one question over REST, and the size of the venv it built.
#
#   bash bench/bench_install.sh [SOURCE_REPO] [DEST] [PORT]
#
# SOURCE_REPO (default: this checkout) is cloned to DEST (default: a new temporary directory);
# the branch checked out there is what is measured. Runs under `nice -n 10` so that other work on
# the machine is not starved; prints the load average before and after. Stops the server itself.
set -euo pipefail
source_repo="${1:-$(cd "$(dirname "$0")/.." && pwd)}"
dest="${2:-$(mktemp -d /tmp/fresh-XXXXXX)}"
port="${3:-8765}"
limit="${BENCH_INSTALL_LIMIT:-1800}"  # seconds before giving up
question='how do I reset my password'

[ -e "$dest/.git" ] || { rmdir "$dest" 2>/dev/null || true; git clone --quiet "$source_repo" "$dest"; }
cd "$dest"
echo "clone: $dest ($(git log --oneline -1))"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"

export PIP_NO_CACHE_DIR=1 SUPPORTBOT_WEB__PORT="$port"
start=$(date +%s.%N)
setsid nice -n 10 make serve >make-serve.log 2>&1 &
server=$!
stop() { kill -TERM -- "-$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; }
trap stop EXIT
trap 'exit 143' TERM INT  # so that a timeout's signal stops the server too

ready=""
while [ -z "$ready" ]; do
  if ! kill -0 "$server" 2>/dev/null; then
    echo "make serve ended before the server was ready; the end of make-serve.log:" >&2
    tail -20 make-serve.log >&2
    exit 1
  fi
  now=$(date +%s.%N)
  if awk -v a="$now" -v b="$start" -v l="$limit" 'BEGIN { exit !(a - b > l) }'; then
    echo "not ready after ${limit}s" >&2
    exit 1
  fi
  if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then
    ready=$(date +%s.%N)
  else
    sleep 1
  fi
done
reply=$(curl -fsS -X POST "http://127.0.0.1:$port/v1/chat" -H 'Content-Type: application/json' \
  -d "{\"text\": \"$question\", \"client_id\": \"bench\", \"stream\": false}")
answered=$(date +%s.%N)
echo "reply: ${reply:0:200}"
awk -v s="$start" -v r="$ready" -v a="$answered" 'BEGIN {
  printf "make serve -> /readyz: %.0f s\nmake serve -> first answer: %.0f s (%.1f min)\n",
         r - s, a - s, (a - s) / 60 }'
echo "venv: $(du -sh .venv | cut -f1)"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
