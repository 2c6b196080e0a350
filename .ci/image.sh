#!/usr/bin/env bash
# apt: musl-tools podman
#
# The container image (issue 12, "deploy anywhere"): builds the exact static binary the image
# holds (`x86_64-unknown-linux-musl`, release, stripped: deploy/Dockerfile's build stage, run on
# this machine), then builds deploy/Dockerfile with podman, its build stage replaced by that
# binary (`--build-context build=…`: CI pulls no base image; the runtime stage is `scratch`).
# Checks: the image exists, is under 30 MB, runs as 65532, has the binary as its entrypoint
# and the HEALTHCHECK on `dkim-relay health`. It does not run the container (CI has no
# container runtime limits to spare); the binary itself is run once (`--version`, `check`).
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-musl
rustup target add "$target" >/dev/null
CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols \
  cargo build --release --locked --quiet --target "$target" --bin dkim-relay
bin="${CARGO_TARGET_DIR:-target}/$target/release/dkim-relay"
ldd "$bin" 2>&1 | grep -Eq "statically linked|not a dynamic" || { echo "image: $bin is not static" >&2; exit 1; }
"$bin" --version
"$bin" check --config config.toml.example >/dev/null

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/out/var/lib/dkim-relay" "$ctx/out/tmp"
chmod 1777 "$ctx/out/tmp"
cp "$bin" "$ctx/out/dkim-relay"
podman build --quiet --format docker --build-context build="$ctx" \
  -f deploy/Dockerfile -t localhost/dkim-relay:ci . >/dev/null
size=$(podman image inspect localhost/dkim-relay:ci --format '{{.Size}}')
user=$(podman image inspect localhost/dkim-relay:ci --format '{{.Config.User}}')
entry=$(podman image inspect localhost/dkim-relay:ci --format '{{json .Config.Entrypoint}}')
health=$(podman image inspect localhost/dkim-relay:ci --format '{{json .Config.Healthcheck}}')
echo "image: $((size / 1000000)) MB, user $user, entrypoint $entry"
[ "$size" -lt 30000000 ] || { echo "image: $size bytes, over 30 MB" >&2; exit 1; }
[ "$user" = "65532:65532" ] || { echo "image: runs as '$user', not 65532" >&2; exit 1; }
[ "$entry" = '["/usr/local/bin/dkim-relay"]' ] || { echo "image: entrypoint $entry" >&2; exit 1; }
echo "$health" | grep -q '"health"' || { echo "image: no HEALTHCHECK on dkim-relay health: $health" >&2; exit 1; }
echo "image: deploy/Dockerfile builds (runtime stage on scratch)"
