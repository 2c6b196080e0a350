#!/usr/bin/env bash
# Peak RSS of the relay while it relays ONE large message (issue 8 item 5).
#
# Starts a standalone SES simulator (`dkim-relay ses-sim`) as the upstream in its own process and
# the relay (`dkim-relay serve`) pointing at it over STARTTLS with the simulator's CA, sends one
# message with python3 smtplib, then reads the relay's VmHWM from /proc. Prints the relay's RSS
# before the message, its peak after, the message size and (peak - baseline) / size.
#
#   cargo build --release && bench/rss-40mb.sh            # 40,000,000-byte body
#   BODY_BYTES=10000000 BIN=target/release/dkim-relay bench/rss-40mb.sh
#
# Both the relay and the simulator refuse messages over 41,943,040 bytes (SES's 40 MB): the
# default body stays under that with its headers and the relay's DKIM-Signature.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${BIN:-$root/target/release/dkim-relay}"
BODY_BYTES="${BODY_BYTES:-40000000}"
[ -x "$BIN" ] || { echo "no binary at $BIN (cargo build --release)" >&2; exit 1; }

work="$(mktemp -d)"
sim_pid=""
relay_pid=""
cleanup() {
    [ -n "$relay_pid" ] && kill "$relay_pid" 2>/dev/null || true
    [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null || true
    wait 2>/dev/null || true
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
ca_out = "$work/ca.pem"
identities = ["example.org"]
max_send_rate = 1000.0
max_message_size = 41943040

[accounts.$user]
secret = "$secret"

[mail_from]
"example.org" = "mail.example.org"
TOML

cat > "$work/relay.toml" <<TOML
[server]
listen = "127.0.0.1:$relay_port"
hostname = "relay.bench"
max_message_size = 41943040

[upstream]
host = "localhost"
port = $sim_port
tls = "starttls"
ca_file = "$work/ca.pem"
username = "$user"
password = "$password"
profile = "ses"
data_timeout_secs = 300

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

kb() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$relay_pid/status"; }
base_kb="$(kb VmRSS)"

size="$(python3 - "$relay_port" "$BODY_BYTES" <<'PY'
import smtplib, sys
port, body_bytes = int(sys.argv[1]), int(sys.argv[2])
head = (b"From: App <app@example.org>\r\nTo: success@simulator.amazonses.com\r\n"
        b"Subject: 40 MB\r\nMIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n")
line = (b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0" + b"\r\n")
assert len(line) == 78
lines, rest = divmod(body_bytes, len(line))
body = line * lines + (b"x" * max(rest - 2, 0) + b"\r\n" if rest >= 2 else b"")
msg = head + body
with smtplib.SMTP("127.0.0.1", port, timeout=600) as s:
    s.sendmail("app@example.org", ["success@simulator.amazonses.com"], msg)
print(len(msg))
PY
)"
sleep 0.2
peak_kb="$(kb VmHWM)"
after_kb="$(kb VmRSS)"

echo "message size:        $size bytes"
echo "relay RSS before:    $((base_kb * 1024)) bytes (${base_kb} kB)"
echo "relay peak (VmHWM):  $((peak_kb * 1024)) bytes (${peak_kb} kB)"
echo "relay RSS after:     $((after_kb * 1024)) bytes (${after_kb} kB)"
python3 -c "print('(peak - baseline) / size = %.2f' % (($peak_kb - $base_kb) * 1024 / $size))"
