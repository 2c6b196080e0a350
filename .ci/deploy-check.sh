#!/usr/bin/env bash
# apt: kubernetes-client python3-venv python3-yaml systemd
#
# Checks deploy/ offline-first (issue 12, "deploy anywhere"), in about a minute:
#  1. compose.yaml and every Kubernetes manifest parse as YAML, with the shape the README
#     promises (the app in the relay's network namespace, the staging UI published on loopback,
#     the native sidecar with probes on /livez and /readyz);
#  2. `kubectl kustomize deploy/kubernetes` renders, and kubernetes-validate (PyPI, installed into
#     a venv here; its schemas are bundled, validation itself needs no network) accepts the result
#     strictly (unknown fields are errors) for Kubernetes 1.29 (native sidecars on by default)
#     and 1.33 (sidecars GA);
#  3. the relay configurations in deploy/ pass `dkim-relay check`, key paths pointed at the
#     repository's demo keys;
#  4. `systemd-analyze security --offline=yes` scores deploy/dkim-relay.service at 2.0 or better.
# The container image itself is not built: no podman/buildah/docker daemon here, and the image's
# static musl binary needs `rustup target add x86_64-unknown-linux-musl`, which downloads a
# toolchain component (not available to CI). deploy/Dockerfile's build stage is the reference.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== deploy: YAML shape of deploy/"
python3 - <<'PY'
import glob, yaml
compose = yaml.safe_load(open("deploy/compose.yaml"))
services = compose["services"]
assert services["app"]["network_mode"] == "service:relay", "the app shares the relay's netns"
assert "127.0.0.1:8025:8025" in services["relay"]["ports"], "staging UI published on loopback"
assert services["relay"]["read_only"] is True
for path in glob.glob("deploy/kubernetes/*.yaml"):
    for doc in yaml.safe_load_all(open(path)):
        assert doc is None or isinstance(doc, dict), path
dep = yaml.safe_load(open("deploy/kubernetes/deployment.yaml"))
sidecar = dep["spec"]["template"]["spec"]["initContainers"][0]
assert sidecar["restartPolicy"] == "Always", "native sidecar"
assert sidecar["livenessProbe"]["httpGet"]["path"] == "/livez"
assert sidecar["readinessProbe"]["httpGet"]["path"] == "/readyz"
assert sidecar["resources"]["requests"], "resource requests"
print("compose.yaml and deploy/kubernetes/*.yaml: ok")
PY

echo "== deploy: kubectl kustomize + kubernetes-validate (strict)"
if command -v kubectl >/dev/null; then
    kubectl kustomize deploy/kubernetes >"$work/rendered.yaml"
else
    echo "kubectl not found (apt: kubernetes-client)" >&2
    exit 1
fi
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate
for version in 1.29.0 1.33.0; do
    "$work/venv/bin/kubernetes-validate" --strict --quiet -k "$version" "$work/rendered.yaml"
done
echo "rendered manifests valid for 1.29 and 1.33"

echo "== deploy: dkim-relay check on deploy/ configurations"
cargo build --locked --quiet --bin dkim-relay
chmod 600 keys/example.org/*.pem
for conf in deploy/kubernetes/relay.toml deploy/compose/relay.toml; do
    sed -e "s#/etc/dkim-relay/keys/example.org/#$PWD/keys/example.org/#" \
        -e "s#/etc/dkim-relay/keys/#$PWD/keys/example.org/#" \
        -e "s#/var/lib/dkim-relay/#$work/state/#" \
        "$conf" >"$work/check.toml"
    target/debug/dkim-relay check --config "$work/check.toml" >/dev/null
    echo "$conf: valid"
done

echo "== deploy: systemd-analyze security (offline)"
if command -v systemd-analyze >/dev/null; then
    systemd-analyze security --offline=yes --threshold=20 deploy/dkim-relay.service | tail -1
else
    echo "systemd-analyze not found (apt: systemd)" >&2
    exit 1
fi
echo "== deploy: deploy checks passed"
