#!/bin/bash
# SPDX-License-Identifier: MIT
# A private QEMU 10 for the guest tests, beside Debian 12's own QEMU 7.2 and without touching it:
# the qemu-system-x86, -common and -data packages from bookworm-backports, fetched with apt-get
# through an apt configuration of our own (its package lists and cache live under the output
# directory; the system's sources and state are left as they are) and unpacked with dpkg -x.
# Their library dependencies are the ones Debian 12's QEMU already pulled in (scripts/deps.sh
# --guest installs it). Idempotent; prints the root it unpacked into.
#
#   scripts/qemu10.sh          fetch if missing; prints DIR (DIR/usr/bin/qemu-system-x86_64)
#
# Run it as tests/integration/lib.sh does (vt_qemu): QEMU_MODULE_DIR=DIR/usr/lib/x86_64-linux-gnu/qemu
# and -L DIR/usr/share/qemu, so that its modules and firmware are its own. Why QEMU 10 at all:
# Debian 12's QEMU 7.2 under TCG loses a migrated guest about one time in six, with or without
# virtap (README, "Multiqueue, migration, restarts").
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
out=${VT_QEMU10_DIR:-$top/build-qemu10}
want=1:10.0.2+ds-2+deb13u1~bpo12+1
root=$out/root

if [ -x "$root/usr/bin/qemu-system-x86_64" ] && [ "$(cat "$out/version" 2>/dev/null)" = "$want" ]; then
  echo "$root"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "qemu10: run as root (apt-get)" >&2; exit 1; }
rm -rf "$out.tmp"
mkdir -p "$out.tmp"/{etc,lists/partial,cache/archives/partial,deb}
echo "deb http://deb.debian.org/debian bookworm-backports main" > "$out.tmp/etc/sources.list"
apt=(-o "Dir::Etc::SourceList=$out.tmp/etc/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o "Dir::State::Lists=$out.tmp/lists" -o "Dir::Cache=$out.tmp/cache" -o Debug::NoLocking=1
     -o APT::Sandbox::User=root)
apt-get "${apt[@]}" update -qq >&2
(cd "$out.tmp/deb" && apt-get "${apt[@]}" download -qq \
  "qemu-system-x86=$want" "qemu-system-common=$want" "qemu-system-data=$want" >&2)
for d in "$out.tmp"/deb/*.deb; do dpkg -x "$d" "$out.tmp/root"; done
QEMU_MODULE_DIR="$out.tmp/root/usr/lib/x86_64-linux-gnu/qemu" \
  "$out.tmp/root/usr/bin/qemu-system-x86_64" --version | grep -q "version 10\." ||
  { echo "qemu10: the unpacked QEMU does not run (missing libraries?)" >&2; exit 1; }
rm -rf "$out.tmp/lists" "$out.tmp/cache" "$out.tmp/deb" "$out"
echo "$want" > "$out.tmp/version"
mv "$out.tmp" "$out"
echo "$root"
