#!/bin/bash
# SPDX-License-Identifier: MIT
# A real Linux guest under QEMU gets its network through virtap: guest -> host ping, host -> guest
# ping, TCP iperf3 both directions with the byte count checked, a UDP small-packet flood, then a
# second boot with MTU 9000 and jumbo frames that may not fragment.
source "$(dirname "$0")/lib.sh"
vt_setup_ns
SOCK=$WORK/vu.sock
vt_start_virtap virtap --socket "$SOCK" --tap vtap0 --mtu 9000 --log-level debug
vt_tap_up vtap0 10.77.0.1/24
ip -n "$NS" link set vtap0 mtu 1500

GUEST_SCRIPT='
ping -c 3 -W 3 10.77.0.1 && echo VT_PING_OK
iperf3 -s -D
(nc -l -p 5001 > /tmp/in; echo "VT_IN_MD5 $(md5sum < /tmp/in | cut -d" " -f1) $(wc -c < /tmp/in)") &
(nc -l -p 5003 >/dev/null; nc 10.77.0.1 5002 < /tmp/in; rm -f /tmp/in) &
echo VT_READY
nc -l -p 9999 >/dev/null
'
vt_boot g1 "$SOCK" 10.77.0.2/24 "$GUEST_SCRIPT"
vt_check "guest boots and its NIC comes up" vt_wait_for "$WORK/g1.log" VTGUEST_NET_UP 60
vt_check "guest pings the host through virtap" vt_wait_for "$WORK/g1.log" VT_PING_OK 30
vt_check "guest iperf3 server ready" vt_wait_for "$WORK/g1.log" VT_READY 30
sleep 0.5
vt_check "host pings the guest (5 of 5)" ip netns exec "$NS" ping -c 5 -i 0.2 -W 3 -q 10.77.0.2

tcp_check() { # iperf3 for the figures; direction flag
  ip netns exec "$NS" iperf3 -c 10.77.0.2 -t 3 -J $1 > "$WORK/tcp$1.json" || return 1
  local sent recv
  sent=$(vt_json "$WORK/tcp$1.json" "j['end']['sum_sent']['bytes']")
  recv=$(vt_json "$WORK/tcp$1.json" "j['end']['sum_received']['bytes']")
  echo "  TCP ${1:-host->guest}: sent $sent received $recv bytes," \
    "$(vt_json "$WORK/tcp$1.json" "round(j['end']['sum_received']['bits_per_second']/1e9, 3)") Gbit/s"
  # iperf3 stops counting at the end signal, so data still in flight is not in "received".
  [ "$sent" -gt 1000000 ] && [ "$recv" -ge $((sent * 98 / 100)) ]
}
vt_check "TCP iperf3 host -> guest" tcp_check ""
vt_check "TCP iperf3 guest -> host" tcp_check "-R"

# Exact byte counts: 24 MiB of random bytes each way over TCP, checked by size and md5.
head -c $((24 << 20)) /dev/urandom > "$WORK/blob"
want=$(md5sum < "$WORK/blob" | cut -d' ' -f1)
exact_in() {
  ip netns exec "$NS" nc -q1 10.77.0.2 5001 < "$WORK/blob" || return 1
  vt_wait_for "$WORK/g1.log" "VT_IN_MD5" 30 || return 1
  local got; got=$(sed -n 's/.*VT_IN_MD5 \([0-9a-f]*\) \([0-9]*\).*/\1 \2/p' "$WORK/g1.log")
  echo "  host -> guest: guest got md5/size $got, want $want $((24 << 20))"
  [ "$got" = "$want $((24 << 20))" ]
}
exact_out() {
  ip netns exec "$NS" timeout 60 nc -l -p 5002 < /dev/null > "$WORK/back" &
  local l=$!
  sleep 0.5
  ip netns exec "$NS" sh -c 'echo go | nc -q1 10.77.0.2 5003' >/dev/null 2>&1 || true
  wait $l || true
  local got; got="$(md5sum < "$WORK/back" | cut -d' ' -f1) $(stat -c %s "$WORK/back")"
  echo "  guest -> host: host got md5/size $got, want $want $((24 << 20))"
  [ "$got" = "$want $((24 << 20))" ]
}
vt_check "TCP host -> guest, 24 MiB byte-exact" exact_in
vt_check "TCP guest -> host, 24 MiB byte-exact" exact_out

udp_check() {
  ip netns exec "$NS" iperf3 -c 10.77.0.2 -u -l 64 -b 0 -t 3 -J -R > "$WORK/udp.json" || return 1
  local pk lost
  pk=$(vt_json "$WORK/udp.json" "j['end']['sum']['packets']")
  lost=$(vt_json "$WORK/udp.json" "j['end']['sum']['lost_packets']")
  echo "  UDP 64 B guest -> host: $pk packets, $lost lost"
  [ "$pk" -gt 1000 ]
}
vt_check "UDP 64-byte flood guest -> host" udp_check
vt_check "host still reaches the guest after the flood" ip netns exec "$NS" ping -c 2 -W 3 -q 10.77.0.2
ip netns exec "$NS" sh -c 'echo done | nc -q1 10.77.0.2 9999' >/dev/null 2>&1 || true
vt_check "guest script finished cleanly" vt_guest_rc g1 30
vt_check "virtap logged the frontend disconnect" vt_wait_for "$WORK/virtap.log" "frontend disconnected" 10

# Jumbo frames: 9000-byte MTU on both sides, pings of 8972 bytes that must not fragment.
ip -n "$NS" link set vtap0 mtu 9000
vt_boot g2 "$SOCK" 10.77.0.2/24 'echo VT_READY; nc -l -p 9999 >/dev/null' mtu=9000
vt_check "jumbo guest up" vt_wait_for "$WORK/g2.log" VT_READY 60
sleep 0.5
vt_check "9000-byte frames both ways (ping -s 8972 -M do)" \
  ip netns exec "$NS" ping -c 3 -W 3 -q -s 8972 -M do 10.77.0.2
ip netns exec "$NS" sh -c 'echo done | nc -q1 10.77.0.2 9999' >/dev/null 2>&1 || true
vt_check "jumbo guest finished" vt_guest_rc g2 30
vt_check "virtap still running" kill -0 "$VT_PID"
vt_finish
