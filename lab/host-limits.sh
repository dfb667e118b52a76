#!/usr/bin/env bash
# Raise the host limits that many systemd nodes on one machine need. Every lab
# node runs systemd, which holds several inotify instances, all counted against
# the one (root) user running podman: with the kernel default of 128, about 25
# nodes exist at once and the next one's systemd exits at start (podman shows
# "Exited (255)" with an empty log). The scale benchmark runs 21 nodes next to
# whatever else is up. Only raises, never lowers; not a network setting.
set -euo pipefail
want=8192
have=$(cat /proc/sys/fs/inotify/max_user_instances)
if (( have < want )); then
  SUDO=$([[ $EUID -eq 0 ]] && echo "" || echo sudo)
  $SUDO sysctl -q -w fs.inotify.max_user_instances=$want
  echo "lab: fs.inotify.max_user_instances $have -> $want (systemd nodes each hold inotify instances)"
fi
