#!/bin/bash
# Build the test guest: the Debian 12 kernel (downloaded with apt-get download, unpacked with
# dpkg -x, nothing installed on the host) booted directly as an uncompressed vmlinux, and a busybox
# initramfs with the virtio-net modules, iperf3, ethtool and vt_udp_rr (bench/udp_rr.c, built
# statically here). Idempotent; output in $VT_GUEST_DIR (default: guest-work/ in the repository),
# built in a temporary directory beside it and moved into place when complete, so that a guest
# booting meanwhile from the old image keeps its files.
#
#   scripts/guest.sh build     build if missing
#   scripts/guest.sh rebuild   build from scratch
#
# The initramfs's /init loads the modules, configures eth0 from the kernel command line
# (vt.ip=ADDR/LEN vt.mtu=N vt.mac=MAC), prints VTGUEST_NET_UP, runs /run.sh (appended per boot
# as a second, gzipped cpio archive by tests/integration/lib.sh), prints VTGUEST_RC=<status>
# and powers off.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
D=${VT_GUEST_DIR:-$top/guest-work}

# Image layout version: bump when the initramfs contents change (bench/udp_rr.c included), so
# that cached images are rebuilt.
VERSION=.v3

build() {
  "$top/scripts/deps.sh" --guest
  # The migration tests run on QEMU 10 (scripts/qemu10.sh: a private copy, the system's QEMU
  # stays); fetched here, with everything else a guest test needs.
  "$top/scripts/qemu10.sh" >/dev/null
  [ -s "$D/vmlinux" ] && [ -s "$D/initramfs.cpio.gz" ] && [ -f "$D/$VERSION" ] && return 0
  local final=$D
  D=$final.tmp.$$
  trap 'rm -rf "$D"' EXIT
  rm -rf "$D"; mkdir -p "$D/dl"
  local pkg kimg off
  pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  [ -n "$pkg" ] || { echo "guest: cannot find the kernel package behind linux-image-amd64" >&2; exit 1; }
  echo "guest: downloading $pkg"
  chown _apt "$D/dl" 2>/dev/null || true
  (cd "$D/dl" && apt-get download -qq "$pkg")
  dpkg -x "$D"/dl/*.deb "$D/kernel"
  # The bzImage carries an xz-compressed vmlinux; unpacking it here saves seconds of in-guest
  # decompression under TCG, and QEMU boots the ELF directly through its PVH entry.
  kimg=$(ls "$D"/kernel/boot/vmlinuz-*)
  off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$kimg" | head -1 | cut -d: -f1)
  tail -c +$((off + 1)) "$kimg" | xz -dc > "$D/vmlinux" 2>/dev/null || true
  [ -s "$D/vmlinux" ] || { echo "guest: could not extract vmlinux" >&2; exit 1; }
  make_initramfs
  rm -rf "$D/kernel" "$D/dl"
  touch "$D/$VERSION"
  rm -rf "$final"; mv "$D" "$final"
  trap - EXIT
  D=$final
  echo "guest: ready in $D"
}

make_initramfs() {
  local kv root ko name
  kv=$(ls "$D/kernel/lib/modules")
  root=$(mktemp -d)
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,lib/modules,etc,proc,sys,dev,tmp,run}
  cp /bin/busybox "$root/bin/"
  ln -s busybox "$root/bin/sh"
  depmod -b "$D/kernel" "$kv"   # the package ships no modules.dep
  for m in virtio_pci virtio_net; do
    modprobe -d "$D/kernel" -S "$kv" --show-depends "$m"
  done | awk '$1 == "insmod" && !seen[$2]++ {print $2}' | while read -r ko; do
    name=$(basename "$ko"); name=${name%%.ko*}
    case "$ko" in
      *.xz) xz -dc "$ko" ;; *.zst) zstd -dc "$ko" ;; *) cat "$ko" ;;
    esac > "$root/lib/modules/$name.ko"
    echo "$name" >> "$root/lib/modules/load.order"
  done
  cp /usr/bin/iperf3 "$root/usr/bin/"
  cp /usr/sbin/ethtool "$root/usr/sbin/"   # ethtool -L: fewer queue pairs than offered
  # UDP request/response echo server for bench/guest_compare.sh; static, so no libraries to copy
  gcc -std=c11 -O2 -D_GNU_SOURCE -Wall -Wextra -Werror -static -o "$root/usr/bin/vt_udp_rr" \
    "$top/bench/udp_rr.c" "$top/bench/common.c"
  for bin in /usr/bin/iperf3 /usr/sbin/ethtool; do
    ldd "$bin" | grep -oE '/[^ ]+' | while read -r lib; do
      mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"
    done
  done
  cat > "$root/init" <<'INIT'
#!/bin/sh
/bin/busybox --install -s
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
for m in $(cat /lib/modules/load.order); do insmod /lib/modules/$m.ko || echo "VTGUEST insmod $m failed"; done
for a in $(cat /proc/cmdline); do
  case "$a" in vt.ip=*) IP=${a#vt.ip=} ;; vt.mtu=*) MTU=${a#vt.mtu=} ;; vt.mac=*) MAC=${a#vt.mac=} ;; esac
done
ip link set lo up
i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
[ -n "$MAC" ] && ip link set eth0 address "$MAC"
[ -n "$MTU" ] && ip link set eth0 mtu "$MTU"
ip addr add "$IP" dev eth0; ip link set eth0 up
echo "VTGUEST_NET_UP"
rc=0; /bin/sh /run.sh || rc=$?
echo "VTGUEST_RC=$rc"
poweroff -f
INIT
  chmod +x "$root/init"
  (cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$D/initramfs.cpio.gz"
  rm -rf "$root"
}

case "${1:-build}" in
  build) build ;;
  rebuild) rm -rf "$D"; build ;;
  *) echo "usage: $0 build|rebuild" >&2; exit 2 ;;
esac
