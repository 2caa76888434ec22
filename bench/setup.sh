#!/bin/bash
# SPDX-License-Identifier: MIT
# What the benchmarks need, installed with apt-get: the build packages (scripts/deps.sh), DPDK
# 22.11 from Debian (dpdk, dpdk-dev: dpdk-testpmd with net_vhost and net_virtio_user) and
# matplotlib for the plots. With --hugepages N, also raises /proc/sys/vm/nr_hugepages (2 MiB
# pages) to at least N and prints "HUGEPAGES OLD TOTAL FREE"; restoring OLD is the caller's job
# (bench/run.sh does it on exit). Idempotent, quiet when everything is present.
# Usage: bench/setup.sh [--hugepages N]. Root.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
pkgs=(dpdk dpdk-dev python3 python3-matplotlib util-linux coreutils procps)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "setup: missing packages: ${missing[*]}; run as root" >&2; exit 1; }
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ "${1:-}" = --hugepages ]; then
  want=${2:?--hugepages needs a count}
  old=$(cat /proc/sys/vm/nr_hugepages)
  [ "$old" -lt "$want" ] && echo "$want" > /proc/sys/vm/nr_hugepages
  echo "HUGEPAGES $old $(cat /proc/sys/vm/nr_hugepages) $(awk '/^HugePages_Free:/ {print $2}' /proc/meminfo)"
fi
