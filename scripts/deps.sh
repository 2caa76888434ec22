#!/bin/bash
# Install every Debian package virtap needs to build and test. Idempotent; quiet when all present.
#   scripts/deps.sh          build + unit/integration tests
#   scripts/deps.sh --guest  also what booting a test guest needs (QEMU, busybox, iperf3)
set -euo pipefail
pkgs=(build-essential cmake ninja-build pkg-config liburing-dev clang libclang-rt-14-dev llvm-14
      iproute2 iputils-ping procps kmod valgrind clang-format clang-tidy cppcheck)
[ "${1:-}" = --guest ] && pkgs+=(qemu-system-x86 busybox-static iperf3 cpio xz-utils zstd python3 kmod netcat-openbsd ethtool dpdk dpdk-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "deps: missing packages: ${missing[*]}; run this script as root (it uses apt-get)" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update -qq
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
