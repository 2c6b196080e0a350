#!/usr/bin/env bash
# Runs inside `unshare -rnm` (from .ci/dkim-verifiers.sh): loopback up, /etc/resolv.conf bind-mounted to
# 127.0.0.1 (this namespace only), .ci/dkim-verifiers/dns_server.py serving the corpus's keys there, then
# Mail::DKIM, OpenDKIM and go-msgauth over every case. Usage: in-namespace.sh WORK_DIR CORPUS_DIR
set -euo pipefail
work="$1"
corpus="$2"
ip link set lo up
echo "nameserver 127.0.0.1" > "$work/resolv.conf"
mount --bind "$work/resolv.conf" /etc/resolv.conf
/usr/bin/python3 .ci/dkim-verifiers/dns_server.py "$corpus/dns.tsv" 53 > "$work/dns.log" 2>&1 &
dns_pid=$!
trap 'kill "$dns_pid" 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q ready "$work/dns.log" && break; sleep 0.1; done
grep -q ready "$work/dns.log" || { echo "dkim-verifiers: DNS server did not start" >&2; cat "$work/dns.log" >&2; exit 1; }
odkim="$(command -v opendkim-testmsg || echo /usr/sbin/opendkim-testmsg)"

rc=0
echo "dkim-verifiers: Mail::DKIM"
perl .ci/dkim-verifiers/maildkim.pl "$corpus" 53 > "$work/maildkim.txt" || rc=1
tail -n 20 "$work/maildkim.txt"

echo "dkim-verifiers: OpenDKIM and go-msgauth"
n=0
: > "$work/opendkim.txt"
: > "$work/gomsgauth.txt"
for f in "$corpus"/*.eml; do
    n=$((n + 1))
    name="$(basename "$f")"
    # opendkim-testmsg: silent and exit 0 when every signature verifies.
    if ! out="$("$odkim" < "$f" 2>&1)" || [ -n "$out" ]; then
        echo "FAIL $name $out" >> "$work/opendkim.txt"
    fi
    # dkim-verify: one "Valid signature for" line per good signature; exits 0 either way.
    out="$(dkim-verify < "$f" 2>&1 || true)"
    if [ "$(grep -c 'Valid signature for example.org' <<<"$out" || true)" -ne 1 ] || grep -q 'Invalid' <<<"$out"; then
        echo "FAIL $name $out" >> "$work/gomsgauth.txt"
    fi
done
bad_o="$(wc -l < "$work/opendkim.txt")"
bad_g="$(wc -l < "$work/gomsgauth.txt")"
head -n 20 "$work/opendkim.txt" "$work/gomsgauth.txt"
echo "OpenDKIM: $n cases, $bad_o failed"
echo "go-msgauth: $n cases, $bad_g failed"
[ "$bad_o" -eq 0 ] && [ "$bad_g" -eq 0 ] || rc=1
exit "$rc"
