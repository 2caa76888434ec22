# SPDX-License-Identifier: MIT
# Shared by the integration tests (sourced): a network namespace of the test's own, virtap in it
# with a TAP, and Linux guests under QEMU whose NIC is a vhost-user virtio-net served by virtap.
# Everything the test starts is killed, and the namespace deleted, when it exits, pass or fail.
set -euo pipefail
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VT_BIN=${VT_BIN:-$TOP/build/virtap}
GUEST_DIR=${VT_GUEST_DIR:-$TOP/guest-work}
WORK=$(mktemp -d /tmp/vt-it.XXXXXX)
NS=vtit$$
PIDS=()
FAILS=0

[ "$(id -u)" = 0 ] || { echo "SKIP: needs root (TAP devices, network namespaces)"; exit 77; }
[ -x "$VT_BIN" ] || { echo "no virtap binary at $VT_BIN"; exit 1; }
"$TOP/scripts/guest.sh" build >/dev/null

vt_cleanup() {
  local rc=$?
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  ip netns del "$NS" 2>/dev/null || true
  if [ $rc -ne 0 ] || [ $FAILS -ne 0 ]; then
    for f in "$WORK"/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -n 40 "$f"; }; done
    # VT_KEEP_WORK=1 keeps the whole work directory (all logs) of a failed run for a post-mortem.
    [ -n "${VT_KEEP_WORK:-}" ] && { echo "kept $WORK"; return; }
  fi
  rm -rf "$WORK"
}
trap vt_cleanup EXIT

vt_ok() { echo "ok: $*"; }
vt_fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
vt_check() { # vt_check "what" command...
  local what=$1; shift
  if "$@"; then vt_ok "$what"; else vt_fail "$what"; fi
}
vt_finish() {
  if [ $FAILS -eq 0 ]; then echo "PASS $(basename "$0")"; exit 0; fi
  echo "FAIL $(basename "$0"): $FAILS checks failed"; exit 1
}

vt_setup_ns() {
  ip netns add "$NS"
  ip -n "$NS" link set lo up
  ip netns exec "$NS" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
}

# vt_start_virtap NAME args... : virtap in the namespace, log in $WORK/NAME.log; sets VT_PID.
vt_start_virtap() {
  local name=$1; shift
  ip netns exec "$NS" "$VT_BIN" "$@" > "$WORK/$name.log" 2>&1 &
  VT_PID=$!
  PIDS+=("$VT_PID")
}

# vt_wait_for FILE REGEX SECONDS
vt_wait_for() {
  local end=$((SECONDS + $3))
  while [ $SECONDS -lt $end ]; do
    grep -qE "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# vt_count FILE REGEX
vt_count() { grep -cE "$2" "$1" 2>/dev/null || true; }

# vt_tap_up TAP ADDR/LEN : wait for virtap's TAP and give the host side an address.
vt_tap_up() {
  local i=0
  while ! ip -n "$NS" link show "$1" >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -gt 100 ] && { echo "TAP $1 never appeared"; return 1; }
    sleep 0.1
  done
  ip -n "$NS" addr add "$2" dev "$1"
  ip -n "$NS" link set "$1" up
}

vt_accel() {
  if [ -w /dev/kvm ] && { [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; }; then
    echo kvm
  else
    echo tcg # a PVM-only /dev/kvm cannot run a stock kernel
  fi
}

# vt_boot NAME SOCK IP/LEN SCRIPT [key=value...]: boot a guest in the background running SCRIPT.
#   keys: mtu=N queues=N mac=MAC server=1 (QEMU listens; virtap in client mode) reboot=1
#         smp=N (vCPUs, default 1) qemu="ARGS" (extra QEMU arguments, split on spaces)
#         netdev=tap:IFNAME (QEMU's own TAP path, the seed's baseline, instead of vhost-user)
#         qemu10=1 (the private QEMU 10 of scripts/qemu10.sh instead of Debian 12's QEMU 7.2)
# Serial output in $WORK/NAME.log; sets QEMU_PID. For experiments, in the environment:
# VT_QEMU10=1 boots every guest on QEMU 10 (ctest's it_*_q10 twins); VT_TCG_MSIX=1 leaves MSI-X
# on and VT_TCG_ONE_CPU=1 gives no second possible vCPU (the two QEMU 7.2 workarounds below,
# which QEMU 10 does without).

vt_boot() {
  local name=$1 sock=$2 ip=$3 script=$4; shift 4
  local mtu="" queues=1 mac=52:54:00:12:34:56 server=0 reboot=0 netdev="" smp=1 kv accel
  local qemu10=${VT_QEMU10:-0} qroot qbin=qemu-system-x86_64 share=/usr/share/qemu
  local -a qextra=() qenv=()
  for kv in "$@"; do
    case "$kv" in
      mtu=*) mtu=${kv#mtu=} ;; queues=*) queues=${kv#queues=} ;; mac=*) mac=${kv#mac=} ;;
      server=*) server=${kv#server=} ;; reboot=*) reboot=${kv#reboot=} ;;
      netdev=*) netdev=${kv#netdev=} ;; smp=*) smp=${kv#smp=} ;; qemu10=*) qemu10=${kv#qemu10=} ;;
      qemu=*) qextra+=(${kv#qemu=}) ;;
    esac
  done
  if [ "$qemu10" = 1 ]; then
    # Its own binary, modules and firmware; the system's QEMU stays what it is.
    qroot=$("$TOP/scripts/qemu10.sh")
    qbin=$qroot/usr/bin/qemu-system-x86_64
    share=$qroot/usr/share/qemu
    qenv=(env "QEMU_MODULE_DIR=$qroot/usr/lib/x86_64-linux-gnu/qemu")
    qextra+=(-L "$share")
  fi
  accel=$(vt_accel)
  local -a cpus=(-accel "$accel" -smp "$smp")
  # QEMU 7.2's TCG drops the guest's memory barriers when the machine can only ever have one
  # vCPU (it assumes nobody else looks at guest memory). virtap, on another host CPU, does look:
  # without the driver's full barrier between publishing a ring index and reading our event
  # index, a kick or an interrupt is lost and the guest's ring stalls for good (seen here: a UDP
  # flood stopped with 199 TX chains posted and no kick). A second possible vCPU makes TCG emit
  # them; the guest runs on one. QEMU 8.1 and later always emit them in system mode (upstream
  # commit c914d46d0a64, "tcg: Do not elide memory barriers for !CF_PARALLEL in system mode"),
  # so QEMU 10 boots with the vCPUs asked for and nothing more.
  [ "$accel" = tcg ] && [ "$qemu10" != 1 ] && [ -z "${VT_TCG_ONE_CPU:-}" ] &&
    cpus=(-accel tcg,thread=multi -smp "$smp,maxcpus=$((smp > 2 ? smp : 2))")
  mkdir -p "$WORK/$name.d"
  printf '%s\n' "$script" > "$WORK/$name.d/run.sh"
  # The per-boot script rides in a second, gzipped cpio: a plain one appended would have to
  # start 4-byte aligned.
  (cd "$WORK/$name.d" && echo run.sh | cpio -o -H newc --quiet | gzip -1) > "$WORK/$name.d/run.gz"
  cat "$GUEST_DIR/initramfs.cpio.gz" "$WORK/$name.d/run.gz" > "$WORK/$name.d/initrd"
  local -a net dev append
  append="console=ttyS0 quiet panic=-1 vt.ip=$ip vt.mac=$mac"
  [ -n "$mtu" ] && append="$append vt.mtu=$mtu"
  dev="virtio-net-pci,netdev=n0,romfile=,mac=$mac"
  [ -n "$mtu" ] && dev="$dev,host_mtu=$mtu"
  if [ "$queues" -gt 1 ]; then dev="$dev,mq=on"; fi
  # QEMU 7.2 under TCG crashes (SIGSEGV) starting a vhost-user NIC with MSI-X: use INTx there.
  # QEMU 10 does not (guest_basic passes with MSI-X on it).
  [ "$accel" = tcg ] && [ "$qemu10" != 1 ] && [ -z "${VT_TCG_MSIX:-}" ] && dev="$dev,vectors=0"
  if [ -n "$netdev" ]; then
    net=(-netdev "tap,id=n0,ifname=${netdev#tap:},script=no,downscript=no,vhost=off")
  else
    local ch="socket,id=c0,path=$sock"
    [ "$server" = 1 ] && ch="$ch,server=on,wait=off"
    net=(-object "memory-backend-memfd,id=mem,size=256M,share=on" -numa node,memdev=mem
         -chardev "$ch" -netdev "vhost-user,id=n0,chardev=c0,queues=$queues")
  fi
  local -a extra=(-no-reboot)
  [ "$reboot" = 1 ] && extra=()
  ip netns exec "$NS" "${qenv[@]}" "$qbin" "${cpus[@]}" -m 256 -cpu max \
    -bios "$share/qboot.rom" -nodefaults -no-user-config -nographic -serial stdio \
    "${extra[@]}" -kernel "$GUEST_DIR/vmlinux" -initrd "$WORK/$name.d/initrd" -append "$append" \
    "${net[@]}" -device "$dev" "${qextra[@]}" < /dev/null > "$WORK/$name.log" 2>&1 &
  QEMU_PID=$!
  PIDS+=("$QEMU_PID")
}

# vt_guest_rc NAME SECONDS: wait for the guest's script to end; prints nothing, returns its rc.
vt_guest_rc() {
  vt_wait_for "$WORK/$1.log" 'VTGUEST_RC=' "$2" || { echo "guest $1 did not finish"; return 124; }
  return "$(sed -n 's/.*VTGUEST_RC=\([0-9]*\).*/\1/p' "$WORK/$1.log" | tail -1)"
}

# vt_json FILE EXPR: evaluate a Python expression over iperf3's JSON as j.
vt_json() { python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print($2)" "$1"; }

# vt_qmp SOCKET COMMAND [JSON-ARGS]: one QMP command to a QEMU started with -qmp unix:SOCKET;
# prints the reply's "return" (or the error) as JSON, fails if QEMU answered with an error.
vt_qmp() {
  python3 - "$@" <<'PY'
import json, socket, sys, time
s = socket.socket(socket.AF_UNIX)
for _ in range(100):  # a QEMU just started may not listen yet
    try:
        s.connect(sys.argv[1]); break
    except OSError:
        time.sleep(0.1)
else:
    print(json.dumps({"error": "no QMP socket"})); sys.exit(1)
s.settimeout(30)
f = s.makefile("rw")
json.loads(f.readline())
def call(cmd, args=None):
    m = {"execute": cmd}
    if args: m["arguments"] = args
    f.write(json.dumps(m) + "\n"); f.flush()
    while True:
        r = json.loads(f.readline())
        if "return" in r or "error" in r: return r
call("qmp_capabilities")
r = call(sys.argv[2], json.loads(sys.argv[3]) if len(sys.argv) > 3 else None)
print(json.dumps(r.get("return", r)))
sys.exit(0 if "return" in r else 1)
PY
}

# vt_fd_count PID: how many file descriptors PID has open.
vt_fd_count() { ls "/proc/$1/fd" | wc -l; }

# vt_kill9 PID: kill -9 a process this test started and reap it.
vt_kill9() { kill -9 "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# vt_wait_exit PID SECONDS: wait for a child of this shell to exit; sets VT_EXIT to its status,
# or to "running" (and returns 1) if it is still running after SECONDS.
vt_wait_exit() {
  local end=$((SECONDS + $2))
  while kill -0 "$1" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.1; done
  if kill -0 "$1" 2>/dev/null; then VT_EXIT=running; return 1; fi
  VT_EXIT=0
  wait "$1" 2>/dev/null || VT_EXIT=$?
}

# vt_guest_release IP: unblock a guest script waiting in `nc -l -p 9999`.
vt_guest_release() {
  ip netns exec "$NS" sh -c "echo done | nc -q1 $1 9999" >/dev/null 2>&1 || true
}

# vt_wait_count FILE REGEX N SECONDS: wait until REGEX matches N lines of FILE; fails if it
# matches fewer, or more, than N.
vt_wait_count() {
  local end=$((SECONDS + $4))
  while [ "$(vt_count "$1" "$2")" -lt "$3" ] && [ $SECONDS -lt $end ]; do sleep 0.1; done
  [ "$(vt_count "$1" "$2")" -eq "$3" ]
}

# vt_stop PID [SIGNAL] [SECONDS]: signal a process the test started (default TERM), wait up to
# SECONDS (default 10) for it to end, SIGKILL it if it has not, reap it and drop it from PIDS so
# the exit trap never signals a reused pid.
vt_stop() {
  local pid=$1 sig=${2:-TERM} end=$((SECONDS + ${3:-10})) p
  local -a keep=()
  { # (bash's "Killed" job notice goes to this stderr)
    kill -s "$sig" "$pid" || true
    while kill -0 "$pid" && [ $SECONDS -lt $end ]; do
      # a zombie still answers kill -0: stop waiting once it is no longer running
      [ "$(ps -o stat= -p "$pid" | cut -c1)" = Z ] && break
      sleep 0.1
    done
    kill -9 "$pid" || true
    wait "$pid" || true
  } 2>/dev/null
  for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}
