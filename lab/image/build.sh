#!/usr/bin/env bash
# Build the lab node image locally (no registry is reachable): debootstrap a
# Debian 12 rootfs, give it the host's apt sources and CA (HTTPS goes through an
# intercepting proxy only the host trusts), and import it into podman.
# The image carries a label with the hash of this recipe; it is rebuilt only
# when the recipe changes (or with FORCE=1).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
IMAGE="${LAB_IMAGE:-localhost/nodeops-lab:bookworm}"
MIRROR="${LAB_MIRROR:-http://deb.debian.org/debian}"
HOST_CA="${LAB_HOST_CA:-/etc/ssl/certs/ca-certificates.crt}"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$ROOT/lab/containers.conf}"

recipe_hash() {
  cat "$HERE/build.sh" "$HERE/packages.txt" | sha256sum | cut -c1-16
}
want="$(recipe_hash)"
have="$(podman image inspect --format '{{ index .Labels "nodeops.recipe" }}' "$IMAGE" 2>/dev/null || true)"
if [[ "$have" == "$want" && "${FORCE:-0}" != "1" ]]; then
  echo "lab image $IMAGE is current (recipe $want)"
  exit 0
fi

packages="$(grep -v '^\s*#' "$HERE/packages.txt" | grep -v '^\s*$' | paste -sd, -)"
work="$(mktemp -d /var/tmp/nodeops-lab-rootfs.XXXXXX)"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"

echo "debootstrap bookworm ($packages)"
debootstrap --variant=minbase --include="$packages" bookworm "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
  tail -30 "$work/debootstrap.log" >&2
  exit 1
}

# apt sources: the host's (same mirror, same snapshot policy).
rm -f "$rootfs/etc/apt/sources.list"
if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
  cp /etc/apt/sources.list.d/debian.sources "$rootfs/etc/apt/sources.list.d/debian.sources"
elif [[ -f /etc/apt/sources.list ]]; then
  cp /etc/apt/sources.list "$rootfs/etc/apt/sources.list"
fi
# Host CA trusted the normal way (a bind mount over the bundle breaks apt's ca-certificates).
if [[ -s "$HOST_CA" ]]; then
  install -D -m 0644 "$HOST_CA" "$rootfs/usr/local/share/ca-certificates/nodeops-host-ca.crt"
  chroot "$rootfs" update-ca-certificates >/dev/null 2>&1 || true
fi
# No daily apt timers or gettys fighting the tests; a clean machine-id per container.
for unit in apt-daily.timer apt-daily-upgrade.timer getty@tty1.service console-getty.service \
            systemd-timesyncd.service e2scrub_reap.service; do
  ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
done
: > "$rootfs/etc/machine-id"
rm -f "$rootfs/var/lib/dbus/machine-id"
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
# Emptied lists must look stale, or apt's cache_valid_time would skip the update.
touch -d @0 "$rootfs/var/lib/apt/lists"

echo "importing $IMAGE"
tar -C "$rootfs" -c . | podman import \
  --change "LABEL nodeops.recipe=$want" \
  --change 'CMD ["/sbin/init"]' \
  --change 'ENV container=podman' \
  - "$IMAGE" >/dev/null
echo "lab image $IMAGE built (recipe $want)"
