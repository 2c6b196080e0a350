#!/usr/bin/env bash
# The README's quick start, as a person would run it: start the relay on the shipped config
# (embedded SES simulator, demo keys), send one message with swaks, read the verdict.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'kill "$relay_pid" 2>/dev/null || true; wait "$relay_pid" 2>/dev/null || true; rm -rf "$work"' EXIT

cargo build --release --locked --quiet
bin=target/release/dkim-relay
rm -rf outbox
$bin serve --config config.toml.example >"$work/relay.log" 2>&1 &
relay_pid=$!
for _ in $(seq 1 100); do
  if grep -q "dkim-relay listening" "$work/relay.log"; then break; fi
  if ! kill -0 "$relay_pid" 2>/dev/null; then cat "$work/relay.log"; exit 1; fi
  sleep 0.1
done

swaks --server 127.0.0.1:2525 --from app@example.org --to someone@example.net \
  --header "Subject: quick start" --body "Hello from dkim-relay" | tee "$work/swaks.log"
grep -E '^<- +250 Ok [0-9a-f]{16}-' "$work/swaks.log"

# An unconfigured From domain is refused and nothing is sent.
if swaks --server 127.0.0.1:2525 --from app@not-configured.test --to someone@example.net \
  >"$work/swaks-refused.log" 2>&1; then
  echo "expected a refusal"; cat "$work/swaks-refused.log"; exit 1
fi
grep -E '^<\*\* +550 5\.7\.1 .*not-configured\.test' "$work/swaks-refused.log"

$bin outbox list | tee "$work/list.txt"
grep -q 'dkim=pass' "$work/list.txt"
grep -q 'dmarc=pass' "$work/list.txt"
test "$($bin outbox list --json | /usr/bin/python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 1

kill -TERM "$relay_pid"
wait "$relay_pid"
grep -q "dkim-relay stopped" "$work/relay.log"
echo "quick start OK"
