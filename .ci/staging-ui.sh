#!/usr/bin/env bash
# apt: chromium chromium-driver swaks nodejs npm
#
# The simulator's web face, end to end (issue 11):
#  (a) an existing Mailpit API client from npm (`mailpit-api`, installed into a temporary
#      prefix) lists, searches, reads and deletes messages on `dkim-relay serve` (the README's
#      quick start, embedded simulator on 127.0.0.1:8025) and on `dkim-relay ses-sim`;
#  (b) headless Chromium, driven through chromedriver (W3C WebDriver) and `--dump-dom`: the live
#      list, a message, its verdict card; screenshots of each view in target/screenshots/.
# Installs nothing itself beyond the npm package in its temporary folder.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# The release build is the quick start's (warm in CI); CI_PROFILE=debug reuses a dev build.
if [ "${CI_PROFILE:-release}" = debug ]; then
  cargo build --locked --quiet
  bin=$root/target/debug/dkim-relay
else
  cargo build --release --locked --quiet
  bin=$root/target/release/dkim-relay
fi
shots=$root/target/screenshots
mkdir -p "$shots"

echo "== mailpit-api (npm) into $work/npm"
mkdir -p "$work/npm"
npm install --prefix "$work/npm" --no-audit --no-fund --silent mailpit-api@2.1.0 >/dev/null
cp .ci/staging-ui/mailpit-client.mjs "$work/npm/client.mjs"

wait_for() { # file pattern pid
  for _ in $(seq 1 150); do
    if grep -q "$2" "$1"; then return 0; fi
    if ! kill -0 "$3" 2>/dev/null; then cat "$1"; return 1; fi
    sleep 0.1
  done
  cat "$1"; return 1
}

# A message with an HTML part (for the HTML tab) from the quick start's domain.
message() { # subject
  printf 'From: App <app@example.org>\r\nTo: someone@example.net\r\nSubject: %s\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="b1"\r\n\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello from dkim-relay.\r\n--b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<h1 style="color:#0b5cad">Hello</h1><p>from <b>dkim-relay</b>.</p><img src="https://tracker.invalid/pixel.png" alt="">\r\n--b1--\r\n' "$1"
}

echo "== serve (quick start config): web UI on 127.0.0.1:8025"
rm -rf outbox
"$bin" serve --config config.toml.example >"$work/serve.log" 2>&1 &
pids+=($!)
wait_for "$work/serve.log" "dkim-relay listening" "${pids[-1]}"
grep -q "http://127.0.0.1:8025/" "$work/serve.log"
message "staging look" >"$work/m1.eml"
swaks --server 127.0.0.1:2525 --from app@example.org --to someone@example.net \
  --data @"$work/m1.eml" >"$work/swaks1.log"
grep -E '250 Ok [0-9a-f]{16}-' "$work/swaks1.log"
(cd "$work/npm" && node client.mjs http://127.0.0.1:8025 "staging look")

echo "== headless Chromium: server-rendered view (--dump-dom)"
id=$(curl -fsS http://127.0.0.1:8025/api/v1/message/latest | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["ID"])')
chromium --headless=new --no-sandbox --disable-gpu --dump-dom "http://127.0.0.1:8025/view/$id" \
  2>/dev/null >"$work/view.html"
grep -q 'DMARC pass' "$work/view.html"
grep -q 'DKIM signature 2' "$work/view.html"
grep -q 'role="tab"' "$work/view.html"          # the script ran: tabs are live
grep -q 'Authentication-Results: mx.verdict.dkim-relay.invalid' "$work/view.html"
chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,1500 \
  --screenshot="$shots/verdict.png" "http://127.0.0.1:8025/view/$id" 2>/dev/null
test -s "$shots/verdict.png"

echo "== headless Chromium through chromedriver: live list, open, verdict card, every tab"
chromedriver --port=9515 >"$work/chromedriver.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -fsS http://127.0.0.1:9515/status >/dev/null 2>&1 && break; sleep 0.1; done
message "live arrival" >"$work/m2.eml"
/usr/bin/python3 .ci/staging-ui/webdriver.py http://127.0.0.1:8025 http://127.0.0.1:9515 "$shots" \
  swaks --server 127.0.0.1:2525 --from app@example.org --to someone@example.net --data @"$work/m2.eml"

kill -TERM "${pids[0]}"; wait "${pids[0]}" || true
rm -rf outbox

echo "== ses-sim: web UI on http_listen, same client"
cat >"$work/sim.toml" <<TOML
region = "us-east-1"
outbox = "outbox"
starttls_listen = "127.0.0.1:12587"
implicit_listen = "off"
http_listen = "127.0.0.1:18025"
identities = ["example.org"]
dns_zone = "zone.txt"
[accounts.AKIAIOSFODNN7EXAMPLE]
secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
[mail_from]
"example.org" = "mail.example.org"
TOML
cat >"$work/zone.txt" <<ZONE
mail.example.org. TXT "v=spf1 include:amazonses.com ~all"
_dmarc.example.org. TXT "v=DMARC1; p=none"
ZONE
"$bin" ses-sim --config "$work/sim.toml" >"$work/sim.log" 2>&1 &
pids+=($!)
wait_for "$work/sim.log" "SES simulator running" "${pids[-1]}"
message "standalone" >"$work/m3.eml"
swaks --server 127.0.0.1:12587 -tls --tls-ca-path "$work/ses-sim-ca.pem" -a PLAIN \
  -au AKIAIOSFODNN7EXAMPLE -ap 'BLBM/9hSUELfq8Gw+rU1YcBjkOxGbhT2XG763xVLGWL9' \
  --from app@example.org --to someone@example.net --data @"$work/m3.eml" >"$work/swaks3.log"
grep -E '250 Ok [0-9a-f]{16}-' "$work/swaks3.log"
(cd "$work/npm" && node client.mjs http://127.0.0.1:18025 "standalone" --delete)

echo "simulator web UI OK; screenshots in $shots"
