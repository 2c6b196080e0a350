#!/usr/bin/env bash
# Spool under a burst (issue 10): the relay in spool mode against the SES simulator, with
# `[upstream] max_send_rate = 50` and injected `454 Throttling failure` on 20 % of messages;
# MESSAGES messages from CLIENTS clients. Reports: sent (250s), delivered (must equal sent),
# duplicates, throttling replies seen by the relay, wall time (first send to last delivery), and
# the highest delivery rate over any 1-second window (must not exceed max_send_rate).
#
#   cargo build --release && bench/spool-burst.sh
#   MESSAGES=2000 MODE=always BIN=target/debug/dkim-relay bench/spool-burst.sh
#
# `max_send_rate` (the pacing) comes from issue 10's pacing work; on a build without it the
# script says so, runs unpaced, and the rate line is then informational only.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${BIN:-$root/target/release/dkim-relay}"
MESSAGES="${MESSAGES:-10000}"
CLIENTS="${CLIENTS:-20}"
RATE="${RATE:-50}"
MODE="${MODE:-on-defer}"
THROTTLE_RATE="${THROTTLE_RATE:-0.2}"
TIMEOUT_SECS="${TIMEOUT_SECS:-900}"
[ -x "$BIN" ] || { echo "no binary at $BIN (cargo build --release)" >&2; exit 1; }

work="$(mktemp -d)"
sim_pid=""
relay_pid=""
cleanup() {
    [ -n "$relay_pid" ] && kill "$relay_pid" 2>/dev/null || true
    [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    [ -n "${KEEP:-}" ] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

sim_port="$(free_port)"
relay_port="$(free_port)"
password="$(printf '%s' "$secret" | "$BIN" smtp-password --region us-east-1)"
"$BIN" keygen --domain example.org --selector bench --keys-dir "$work/keys" >/dev/null

cat > "$work/sim.toml" <<TOML
region = "us-east-1"
outbox = "$work/outbox"
starttls_listen = "127.0.0.1:$sim_port"
implicit_listen = "off"
http_listen = ""
ca_out = "$work/ca.pem"
identities = ["example.org"]
max_send_rate = 100000.0
max_24h = 10000000

[accounts.$user]
secret = "$secret"

[mail_from]
"example.org" = "mail.example.org"

[faults]
failure_rate = $THROTTLE_RATE
failure_reply = "454 Throttling failure: Maximum sending rate exceeded."
TOML

write_relay() {
cat > "$work/relay.toml" <<TOML
[server]
listen = "127.0.0.1:$relay_port"
hostname = "relay.bench"
max_connections_per_ip = 100

[upstream]
host = "localhost"
port = $sim_port
tls = "starttls"
ca_file = "$work/ca.pem"
username = "$user"
password = "$password"
$1

[spool]
dir = "$work/spool"
mode = "$MODE"
retry_initial_ms = 1000
retry_max_ms = 10000

[domains."example.org"]
mail_from = "mail.example.org"
sign = ["bench"]

[domains."example.org".selectors.bench]
algorithm = "rsa-sha256"
key_file = "$work/keys/example.org/bench.pem"
TOML
}

RUST_LOG=warn "$BIN" ses-sim --config "$work/sim.toml" >"$work/sim.log" 2>&1 &
sim_pid=$!
wait_port "$sim_port"
# The relay's configuration names the simulator's CA, written once the simulator is up.
paced=yes
write_relay "max_send_rate = $RATE"
if ! "$BIN" check --config "$work/relay.toml" >"$work/check.out" 2>&1; then
    if grep -q max_send_rate "$work/check.out"; then
        echo "WARNING: this build has no [upstream] max_send_rate (the pacing work); running UNPACED" >&2
        paced=no
        write_relay ""
    else
        cat "$work/check.out" >&2; exit 1
    fi
fi

RUST_LOG=info "$BIN" serve --config "$work/relay.toml" >"$work/relay.log" 2>&1 &
relay_pid=$!
wait_port "$relay_port"

start="$(date +%s.%N)"
sent="$(python3 - "$relay_port" "$MESSAGES" "$CLIENTS" <<'PY'
import smtplib, sys, threading
port, total, clients = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
ok, other = [0], {}
lock = threading.Lock()
def run(c):
    n = 0
    s = smtplib.SMTP("127.0.0.1", port, timeout=600)
    s.ehlo("bench.test")
    for i in range(c, total, clients):
        msg = ("From: App <app@example.org>\r\nTo: someone@example.net\r\n"
               "Subject: burst-%d\r\nMessage-ID: <burst-%d@app.example.org>\r\n\r\nhello %d\r\n" % (i, i, i))
        try:
            s.sendmail("app@example.org", ["someone@example.net"], msg)
            with lock: ok[0] += 1
        except smtplib.SMTPResponseException as e:
            with lock: other[e.smtp_code] = other.get(e.smtp_code, 0) + 1
    s.quit()
ts = [threading.Thread(target=run, args=(c,)) for c in range(clients)]
[t.start() for t in ts]; [t.join() for t in ts]
if other: print("non-250 replies:", other, file=sys.stderr)
print(ok[0])
PY
)"
accepted_at="$(date +%s.%N)"

# Wait until everything that got 250 reached the simulator (or the timeout).
python3 - "$work/outbox" "$sent" "$TIMEOUT_SECS" <<'PY'
import os, sys, time
d, want, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
t0 = time.time()
while time.time() - t0 < limit:
    n = len([f for f in os.listdir(d) if f.endswith(".json")]) if os.path.isdir(d) else 0
    if n >= want: break
    time.sleep(0.5)
PY
end="$(date +%s.%N)"
sleep 1

python3 - "$work/outbox" "$sent" "$start" "$accepted_at" "$end" "$RATE" "$paced" "$work/relay.log" <<'PY'
import json, os, sys, collections
from datetime import datetime
d, sent, start, accepted_at, end, rate, paced, log = sys.argv[1:9]
sent, start, accepted_at, end, rate = int(sent), float(start), float(accepted_at), float(end), float(rate)
recs = [json.load(open(os.path.join(d, f))) for f in os.listdir(d) if f.endswith(".json")]
subjects = collections.Counter(r.get("subject") for r in recs)
dups = sum(n - 1 for n in subjects.values() if n > 1)
times = sorted(datetime.fromisoformat(r["time"].replace("Z", "+00:00")).timestamp() for r in recs)
best, j = 0, 0
for i, t in enumerate(times):
    while times[j] <= t - 1.0: j += 1
    best = max(best, i - j + 1)
throttles = sum(l.count("Throttling failure") for l in open(log, errors="replace"))
print(f"sent (250):              {sent}")
print(f"delivered:               {len(subjects)} distinct ({len(recs)} records)  {'OK' if len(subjects) >= sent else 'MISSING %d' % (sent - len(subjects))}")
print(f"duplicates:              {dups}")
print(f"throttling replies seen: {throttles} (relay log)")
print(f"accept time:             {accepted_at - start:.1f} s (all {sent} answered)")
print(f"wall time:               {end - start:.1f} s (first send to last delivery)")
print(f"max 1-s delivery rate:   {best} msg/s (max_send_rate {rate:g}; paced: {paced}) {'OK' if best <= rate else 'EXCEEDS' }")
PY
