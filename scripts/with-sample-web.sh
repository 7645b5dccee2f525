#!/usr/bin/env bash
# Run a command while the bundled sample website is served on 127.0.0.1:$WEB_PORT.
# The server is stopped when the command ends (or fails, or is interrupted).
set -euo pipefail
: "${WEB_PORT:=8765}"
: "${WEB_PAGES:=300}" "${WEB_NAMING_PAGES:=0}"
BIN="${BIN:-.venv/bin}"
if (exec 3<>"/dev/tcp/127.0.0.1/$WEB_PORT") 2>/dev/null; then
  echo "port $WEB_PORT is busy (set WEB_PORT=... to use another)" >&2
  exit 2
fi
"$BIN/flamboyance" sample-web serve --port "$WEB_PORT" --pages "$WEB_PAGES" --naming-pages "$WEB_NAMING_PAGES" >/dev/null 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$WEB_PORT") 2>/dev/null; then break; fi
  kill -0 "$server" 2>/dev/null || { echo "sample web failed to start" >&2; exit 1; }
  sleep 0.1
done
"$@"
