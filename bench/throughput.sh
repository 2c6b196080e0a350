#!/usr/bin/env bash
# Throughput through the upstream pool (issue 10): CLIENTS concurrent SMTP clients against the
# relay, the relay against a standalone SES simulator that delays every reply by LATENCY_MS
# (`[faults] latency_ms`). Reports messages/s and how close that comes to what the pool allows.
#
# SES offers no PIPELINING, so each pooled connection carries one transaction at a time and each
# transaction waits for ROUND_TRIPS replies: RSET (the pool's check before reusing a connection),
# MAIL, RCPT, DATA and the final dot. The pool's ceiling is therefore
#     pool_size / (ROUND_TRIPS x latency)
# and the script prints the measured rate as a share of that (the pool keeps pool_size connections
# busy when it is near 100 %) and of the naive pool_size / latency.
#
#   cargo build --release && bench/throughput.sh
#   POOL_SIZE=4 CLIENTS=50 LATENCY_MS=50 PER_CLIENT=20 BIN=target/debug/dkim-relay bench/throughput.sh
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${BIN:-$root/target/release/dkim-relay}"
CLIENTS="${CLIENTS:-50}"
PER_CLIENT="${PER_CLIENT:-20}"
LATENCY_MS="${LATENCY_MS:-50}"
POOL_SIZE="${POOL_SIZE:-16}"
ROUND_TRIPS=5
[ -x "$BIN" ] || { echo "no binary at $BIN (cargo build --release)" >&2; exit 1; }

work="$(mktemp -d)"
sim_pid=""
relay_pid=""
cleanup() {
    [ -n "$relay_pid" ] && kill "$relay_pid" 2>/dev/null || true
    [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    if [ -n "${KEEP_LOGS:-}" ]; then cp "$work"/*.log "$KEEP_LOGS"/ 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

sim_port="$(free_port)"
relay_port="$(free_port)"
password="$(printf '%s' "$secret" | "$BIN" smtp-password --region us-east-1)"

cat > "$work/sim.toml" <<TOML
region = "us-east-1"
outbox = "$work/outbox"
starttls_listen = "127.0.0.1:$sim_port"
implicit_listen = "off"
http_listen = ""
ca_out = "$work/ca.pem"
identities = ["example.org"]
max_send_rate = 100000.0
max_connections = 200

[accounts.$user]
secret = "$secret"

[mail_from]
"example.org" = "mail.example.org"

[faults]
latency_ms = $LATENCY_MS
TOML

cat > "$work/relay.toml" <<TOML
[server]
listen = "127.0.0.1:$relay_port"
hostname = "relay.bench"
max_connections = $((CLIENTS + 10))
max_connections_per_ip = $((CLIENTS + 10))

[upstream]
host = "localhost"
port = $sim_port
tls = "starttls"
ca_file = "$work/ca.pem"
username = "$user"
password = "$password"
profile = "ses"
pool_size = $POOL_SIZE

[domains."example.org"]
mail_from = "mail.example.org"
sign = ["s2026a"]

[domains."example.org".selectors.s2026a]
algorithm = "rsa-sha256"
key_file = "$root/keys/example.org/s2026a.pem"
TOML

RUST_LOG="${RUST_LOG:-warn}" "$BIN" ses-sim --config "$work/sim.toml" >"$work/sim.log" 2>&1 &
sim_pid=$!
wait_port "$sim_port"
RUST_LOG="${RUST_LOG:-warn}" "$BIN" serve --config "$work/relay.toml" >"$work/relay.log" 2>&1 &
relay_pid=$!
wait_port "$relay_port"
sleep 0.3

python3 - "$relay_port" "$CLIENTS" "$PER_CLIENT" "$LATENCY_MS" "$POOL_SIZE" "$ROUND_TRIPS" <<'PY'
import smtplib, sys, threading, time
port, clients, per_client, latency_ms, pool, trips = map(int, sys.argv[1:])
msg = (b"From: App <app@example.org>\r\nTo: success@simulator.amazonses.com\r\n"
       b"Subject: throughput\r\nMessage-ID: <%d.%d@app.example.org>\r\n\r\n" + (b"x" * 75 + b"\r\n") * 20)
ok, failed = [0], []
lock = threading.Lock()
start_gate = threading.Barrier(clients + 1)

def client(i):
    s = smtplib.SMTP("127.0.0.1", port, timeout=120)
    s.ehlo("bench.test")
    start_gate.wait()
    for m in range(per_client):
        try:
            s.sendmail("app@example.org", ["success@simulator.amazonses.com"], msg % (i, m))
            with lock:
                ok[0] += 1
        except smtplib.SMTPException as e:
            with lock:
                failed.append(repr(e))
    s.quit()

threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
for t in threads:
    t.start()
start_gate.wait()
t0 = time.monotonic()
for t in threads:
    t.join()
elapsed = time.monotonic() - t0
rate = ok[0] / elapsed
naive = pool / (latency_ms / 1000)
ceiling = pool / (trips * latency_ms / 1000)
print(f"clients {clients}, messages {clients * per_client}, pool_size {pool}, simulator latency {latency_ms} ms per reply")
print(f"delivered {ok[0]}, failed {len(failed)}{' ' + failed[0] if failed else ''}")
print(f"wall time {elapsed:.2f} s, throughput {rate:.1f} msg/s")
print(f"pool ceiling pool_size / ({trips} replies x latency) = {ceiling:.1f} msg/s -> {100 * rate / ceiling:.0f} %")
print(f"naive pool_size / latency = {naive:.1f} msg/s -> {100 * rate / naive:.0f} %")
PY
