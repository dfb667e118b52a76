#!/usr/bin/env bash
# Test scaffolding: a private L2 network for the scenario's nodes, made without
# touching this machine's network namespace (no podman network: netavark turns
# on the host's net.ipv4.ip_forward even for --internal networks).
#
# Every container runs with --network none. A bridge lives in the namespace of
# SWITCH (which also serves as an outside client, not in any tier), and each
# node gets a veth pair created inside the switch's namespace with its peer
# moved straight into the node's namespace as eth0. Nothing is created in the
# host namespace; the pairs vanish with the containers.
#
#   wire-network.sh SWITCH SWITCH_ADDRESS/PREFIX NODE=ADDRESS/PREFIX...
set -euo pipefail
switch="$1"; switch_addr="$2"; shift 2
pid_of() { podman inspect --format '{{.State.Pid}}' "$1"; }
sw_pid="$(pid_of "$switch")"
[[ "$sw_pid" =~ ^[1-9][0-9]*$ ]] || { echo "no running container $switch" >&2; exit 1; }
in_sw() { nsenter --target "$sw_pid" --net -- "$@"; }

if ! in_sw ip link show br0 >/dev/null 2>&1; then
  in_sw ip link add br0 type bridge
  in_sw ip addr add "$switch_addr" dev br0
  in_sw ip link set br0 up
fi
i=0
for spec in "$@"; do
  node="${spec%%=*}"; addr="${spec#*=}"; i=$((i + 1))
  port="sw$i"
  node_pid="$(pid_of "$node")"
  if in_sw ip link show "$port" >/dev/null 2>&1; then
    continue
  fi
  in_sw ip link add "$port" type veth peer name eth0 netns "$node_pid"
  in_sw ip link set "$port" master br0 up
  nsenter --target "$node_pid" --net -- ip addr add "$addr" dev eth0
  nsenter --target "$node_pid" --net -- ip link set eth0 up
  nsenter --target "$node_pid" --net -- ip link set lo up
done
