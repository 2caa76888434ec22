#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Write the seed corpus: well-formed inputs the fuzzers mutate from (fuzz/corpus/<fuzzer>/).
import os, struct

HERE = os.path.dirname(os.path.abspath(__file__))
MEM_GPA, MEM_SIZE = 0x10000, 64 << 10
F = lambda b: 1 << b
VERSION_1, MRG, INDIRECT, EVENT_IDX, CSUM, TSO4 = F(32), F(15), F(28), F(29), F(0), F(11)


def desc(addr, length, flags=0, nxt=0):
    return struct.pack("<QIHH", addr, length, flags, nxt)


# fuzz_vring.c: a 24-byte header, then steps (the format is described at the top of that file).
NEXT, WRITE, INDIRECT_F = 1, 2, 4
IN_ORDER = F(35)
CF_BURST, CF_RX_EMPTY, CF_POLL, CF_PAD_SHORT = 1, 2, 4, 8
CF_INFL_RX, CF_INFL_TX, CF_LOG, CF_LOG_USED = 16, 32, 64, 128
(OP_MEM, OP_TX, OP_RX, OP_RXQ, OP_RXFRAME, OP_PLAN, OP_AVAIL, OP_POLL, OP_RESTART, OP_INFL,
 OP_ASYNC, OP_HALT, OP_PEEK) = range(13)
CF2_OWNER, CF2_RL = 1, 2
RS_RX, RS_TX, RS_BASE, RS_LAYOUT, RS_NUM = 1, 2, 4, 8, 16
FK_BYTES, FK_PATTERN, FK_EIO, FK_EINTR = range(4)
# Offsets from MEM_GPA: rings at the start of region A, free space after them.
RX_DESC, RX_AVAIL, RX_USED, TX_DESC, TX_AVAIL, TX_USED = 0x0, 0x1000, 0x2000, 0x4000, 0x5000, 0x6000
MEM2, ROM = 0x10000, 0x11000  # region B (read-write, own host buffer), region C (read-only)


def vring_hdr(features, rx_num=8, tx_num=8, flags=0, rx_cover=1536, tx_budget=0, rx_budget=0,
              hold=0, budget_bytes=0, rx_base=0, tx_base=0, log_size=8,
              flags2=CF2_OWNER | CF2_RL):
    return struct.pack("<BBQBHBBBHHHBB", rx_num.bit_length() - 1, tx_num.bit_length() - 1,
                       features, flags, rx_cover, tx_budget, rx_budget, hold, budget_bytes,
                       rx_base, tx_base, log_size, flags2)


def mem(off, data):  # guest writes, at most 64 KiB per step
    out = b""
    for at in range(0, len(data), 0xFFFF):
        part = data[at:at + 0xFFFF]
        out += bytes([OP_MEM]) + struct.pack("<I", off + at)[:3]
        out += struct.pack("<H", len(part)) + part
    return out


def descs(ring_off, entries, first=0):  # descriptor table entries from index first
    return mem(ring_off + 16 * first, b"".join(desc(*e) for e in entries))


def avail(ring, count, head=0):
    return bytes([OP_AVAIL, ring, count, head])


def rxq(kind, length, data=b""):
    return bytes([OP_RXQ, kind]) + struct.pack("<H", length & 0xFFFF) + data


def rxframe(kind, length, data=b""):
    return bytes([OP_RXFRAME, kind]) + struct.pack("<H", length & 0xFFFF) + data


def plan(answers):
    return bytes([OP_PLAN, len(answers)]) + bytes(answers)


def restart(which, base=0, layout=None, num=None):
    which |= (RS_LAYOUT if layout else 0) | (RS_NUM if num is not None else 0)
    out = bytes([OP_RESTART, which]) + struct.pack("<H", base)
    for off in layout or ():
        out += struct.pack("<I", off)[:3]
    if num is not None:
        out += struct.pack("<H", num)
    return out


def async_steps(calls, steps):  # guest steps run during the backend's (calls + 1)-th call
    return bytes([OP_ASYNC, calls, len(steps)]) + steps


def infl(off, data):
    return bytes([OP_INFL]) + struct.pack("<HB", off, len(data)) + data


TX, RX, POLL, HALT, PEEK = (bytes([op]) for op in (OP_TX, OP_RX, OP_POLL, OP_HALT, OP_PEEK))
G = lambda off: MEM_GPA + off  # guest physical address of an offset


def tx_frames(count, length=72, at=0xD000, flags=0):
    """count one-descriptor TX chains (header + frame), heads 0.., buffers from at."""
    frame = bytes(12) + bytes(range(length - 12))
    out = descs(TX_DESC, [(G(at + 0x100 * i), length, flags) for i in range(count)])
    for i in range(count):
        out += mem(at + 0x100 * i, frame)
    return out


def rx_bufs(count, length, at=0x8000, stride=None):
    """count one-descriptor RX buffers, heads 0.., from at."""
    stride = stride or max(length, 16)
    return descs(RX_DESC, [(G(at + stride * i), length, WRITE) for i in range(count)])


def burst_indirect_fill():
    # TX chain 0: an indirect table of 1024 one-byte descriptors (1024 iovecs); chain 1: one of
    # 62; with their header slots they fill the burst's 1088 iovec slots exactly, and the old
    # txb_fill then offered chain 2 `room - used - 1` = UINT_MAX slots (a heap overflow).
    t1, t2, buf = 0x8000, 0xC000, 0xD000
    tbl1 = b"".join(desc(G(buf + i), 1, NEXT if i < 1023 else 0, i + 1) for i in range(1024))
    tbl2 = b"".join(desc(G(buf + i), 1, NEXT if i < 61 else 0, i + 1) for i in range(62))
    out = mem(t1, tbl1) + mem(t2, tbl2)
    out += descs(TX_DESC, [(G(t1), len(tbl1), INDIRECT_F), (G(t2), len(tbl2), INDIRECT_F),
                           (G(0xE000), 72)])
    out += mem(0xE000, bytes(12) + bytes(range(60)))
    out += avail(1, 3) + TX
    return vring_hdr(VERSION_1 | INDIRECT, flags=CF_BURST) + out


def mrg_held():
    # Mergeable RX, 256-byte buffers, 4 made available: a 1500-byte frame takes them all and
    # its tail waits in the net queue (held), the next frame waits behind it; the guest then
    # posts 12 more buffers and the next run flushes the held frame, holds the 3000-byte one
    # again (10 buffers left), and after a last refill everything, the VMM's frame too, is in.
    frame = bytes(12) + bytes(i & 0xFF for i in range(1488))
    out = rx_bufs(32, 256) + avail(0, 4)
    out += rxq(FK_BYTES, len(frame), frame) + rxq(FK_PATTERN, 3000) + RX
    out += avail(0, 12, 4) + RX + rxframe(FK_PATTERN, 700) + RX + avail(0, 16, 16) + RX
    return vring_hdr(VERSION_1 | MRG, rx_num=32, rx_cover=512, flags=CF_RX_EMPTY) + out


def inflight():
    # Both rings tracked; the TX area comes with history (version 1, desc_num 8, heads 1 and 0
    # in flight, taken in that order from avail slots 0 and 1), so the start resubmits them
    # before heads 2 and 3; later the backend is full once (the take is undone), and a restart
    # of both rings, the second at a base the frontend made up, recovers from this device's
    # area.
    area = 4160
    hist = struct.pack("<QHHHH", 0, 1, 8, 0, 0)
    d0 = struct.pack("<B5xHQ", 1, 0, 7)  # head 0: in flight, counter 7
    d1 = struct.pack("<B5xHQ", 1, 0, 3)  # head 1: in flight, counter 3 (taken first)
    out = infl(area, hist) + infl(area + 16, d0 + d1)
    out += tx_frames(4) + mem(TX_AVAIL, struct.pack("<HHHHHH", 0, 4, 1, 0, 2, 3))
    out += rx_bufs(8, 2048) + avail(0, 8)
    out += rxq(FK_PATTERN, 1000) + rxq(FK_PATTERN, 200) + TX + RX
    out += plan([4]) + avail(1, 2, 0) + TX + restart(3) + TX + RX + restart(6, 3) + TX
    return vring_hdr(VERSION_1 | MRG, flags=CF_INFL_RX | CF_INFL_TX) + out


def log_on():
    # Dirty logging on both rings (used ring writes too), mergeable RX; the first buffer
    # straddles regions A and B (two iovecs), the last is too small for a padded frame.
    out = descs(RX_DESC, [(G(0xFC00), 2048, WRITE), (G(MEM2 + 0x400), 2048, WRITE),
                          (G(0x9000), 4096, WRITE), (G(0xA000), 64, WRITE)])
    out += avail(0, 4) + rxq(FK_PATTERN, 3000) + rxq(FK_PATTERN, 60) + rxq(FK_BYTES, 14, bytes(14))
    out += tx_frames(2) + avail(1, 2) + TX + RX
    return vring_hdr(VERSION_1 | MRG, flags=CF_LOG | CF_LOG_USED | CF_PAD_SHORT) + out


def evidx_inorder():
    # EVENT_IDX + IN_ORDER, a burst backend that takes part of a burst, then none, then fails
    # whole bursts (the device falls back to tx, which answers full once); busy-poll toggles.
    out = tx_frames(8) + avail(1, 8) + rx_bufs(8, 1536) + avail(0, 8)
    out += plan([3 | (2 << 3), 4, 5, 0, 4]) + TX + TX + TX + TX + POLL + TX
    out += rxq(FK_PATTERN, 1500) + rxq(FK_EIO, 0) + rxq(FK_PATTERN, 64) + RX + POLL + RX
    return vring_hdr(VERSION_1 | MRG | EVENT_IDX | IN_ORDER | INDIRECT, rx_num=16, tx_num=16,
                     flags=CF_BURST | CF_RX_EMPTY) + out


def burst_per_frame():
    # Per-frame answers inside a burst: written, -EIO, written, full (and full after it).
    out = tx_frames(6) + avail(1, 6)
    out += plan([7, 0, 5, 0, 4]) + TX + TX
    return vring_hdr(VERSION_1 | CSUM | TSO4, tx_num=16, flags=CF_BURST | CF_POLL,
                     tx_budget=4) + out


def single_tx_errors():
    # No tx_burst: one write per frame, answered full, -EIO, -EMSGSIZE, written; then the port
    # halts the pair (another pair's frontend fd blocked): nothing moves until it is cleared.
    out = tx_frames(4) + avail(1, 4) + plan([4, 5, 6, 0]) + TX + TX
    out += rx_bufs(2, 1536) + avail(0, 2) + rxq(FK_PATTERN, 100) + HALT + RX + TX
    out += rxframe(FK_PATTERN, 100) + HALT + RX
    return vring_hdr(VERSION_1, flags=CF_RX_EMPTY) + out


def rx_big_bufs():
    # No MRG_RXBUF: one chain per frame, big buffers of three descriptors (the Linux layout,
    # but the header split after 10 bytes, so num_buffers lands in the second), frames larger
    # than a chain (dropped) and one that needs the bounce buffer.
    out = descs(RX_DESC, [(G(0x8000), 10, WRITE | NEXT, 1), (G(0x8100), 4096, WRITE | NEXT, 2),
                          (G(0x9100), 4096, WRITE)])
    out += descs(RX_DESC, [(G(0xA000), 12, WRITE | NEXT, 4), (G(0xA100), 1500, WRITE)], first=3)
    out += mem(RX_AVAIL + 4, struct.pack("<HH", 0, 3)) + mem(RX_AVAIL + 2, struct.pack("<H", 2))
    # 6000 bytes fit the first chain; 70000 overflow the second and the bounce buffer (cut:
    # dropped); the VMM's 9000 bytes wait for a buffer that never comes.
    out += rxq(FK_PATTERN, 6000) + rxq(FK_PATTERN | 4, 70000 - 0x10000) + RX
    out += rxframe(FK_PATTERN, 9000) + RX
    return vring_hdr(VERSION_1, rx_cover=100) + out


def legacy():
    # Neither VERSION_1 nor MRG_RXBUF: 10-byte headers, small ring.
    out = tx_frames(2) + avail(1, 2) + rx_bufs(4, 1600) + avail(0, 4)
    out += rxq(FK_PATTERN, 1000) + rxq(FK_EINTR, 0) + rxq(FK_PATTERN, 40) + TX + RX
    return vring_hdr(0, rx_num=4, tx_num=4, flags=CF_PAD_SHORT, rx_cover=1600) + out


def indirect_tx():
    # TX chain as an indirect table: header, then frame; one TX chain straddling regions A/B;
    # one indirect table straddling them (its entries come from two host buffers).
    tbl = desc(G(0xC000), 12, NEXT, 1) + desc(G(0xC00C), 60)
    out = mem(0xB000, tbl) + mem(0xC000, bytes(12) + bytes(range(60)))
    tbl3 = desc(G(0xC000), 12, NEXT, 1) + desc(G(0xC00C), 30, NEXT, 2) + desc(G(0xC02A), 30)
    out += mem(MEM2 - 24, tbl3)
    out += descs(TX_DESC, [(G(0xB000), len(tbl), INDIRECT_F), (G(MEM2 - 40), 100),
                           (G(MEM2 - 24), len(tbl3), INDIRECT_F)])
    out += avail(1, 3) + TX
    return vring_hdr(VERSION_1 | INDIRECT, flags=CF_BURST) + out


def rx_frame_vmm():
    # The embedding VMM's entry point: frames from the input, held while the guest has no
    # buffers, delivered when it posts some; small budgets.
    out = rx_bufs(4, 512) + rxframe(FK_BYTES, 80, bytes(80)) + rxframe(FK_PATTERN, 1400)
    out += avail(0, 4) + rxframe(FK_PATTERN, 100) + RX
    return vring_hdr(VERSION_1 | MRG, rx_budget=1, tx_budget=1, hold=2, budget_bytes=8,
                     flags2=0) + out


def rx_pool(entries, frames):
    # Mergeable RX whose every buffer is one indirect table of `entries` one-byte descriptors
    # (all heads share the table). The first run moves `frames` one-buffer frames, so the
    # second pops that many buffers ahead: their iovecs fill the scratch array (exactly, with
    # 512 entries; with 400 the third pop does not fit), the first frame takes one buffer and
    # the second, 1000 bytes, needs more than the pool holds: the pool is compacted to make
    # room for the next pop.
    tbl = b"".join(desc(G(0xA000 + i), 1, WRITE | (NEXT if i < entries - 1 else 0), i + 1)
                   for i in range(entries))
    out = mem(0x8000, tbl) + descs(RX_DESC, [(G(0x8000), len(tbl), INDIRECT_F)] * 8)
    out += avail(0, frames) + b"".join(rxq(FK_PATTERN, entries) for _ in range(frames)) + RX
    out += avail(0, 8 - frames, frames) + rxq(FK_PATTERN, entries) + rxq(FK_PATTERN, 1000)
    out += rxq(FK_PATTERN, entries) + RX + RX
    return vring_hdr(VERSION_1 | MRG | INDIRECT, rx_cover=12) + out


def infl_batch_async():
    # Inflight on a ring of 4 mergeable 64-byte RX buffers: a 256-byte frame takes all 4, and
    # while the backend reads the second frame the guest (on its other CPU) publishes 4 more
    # heads, which that frame takes too: 8 used entries in one run, more than the ring's size,
    # so the inflight batch has to be settled mid-run.
    out = rx_bufs(4, 64) + avail(0, 4)
    # (backend calls: rx_empty and rx for the first frame, then rx_empty for the second)
    out += async_steps(2, avail(0, 4)) + rxq(FK_PATTERN, 256) + rxq(FK_PATTERN, 256) + RX
    return vring_hdr(VERSION_1 | MRG, rx_num=4, rx_cover=12, flags=CF_INFL_RX | CF_RX_EMPTY) + out


def ring_layout():
    # The frontend moves the rings on a restart: TX used ring over its own avail ring (device
    # writes land on what it reads), then a used ring in read-only memory, then misaligned;
    # then sizes: 3 (not a power of two), 16 (the inflight area is laid out for 8), 4096 (the
    # rings no longer fit their places). An embedder counts the avail entries in between.
    out = tx_frames(2) + avail(1, 2) + PEEK + TX
    out += restart(RS_TX | RS_BASE, 0, (TX_DESC, TX_AVAIL, TX_AVAIL)) + avail(1, 2) + PEEK + TX
    out += restart(RS_TX, 0, (TX_DESC, TX_AVAIL, ROM)) + TX
    out += restart(RS_RX | RS_TX, 0, (TX_DESC + 8, TX_AVAIL + 1, TX_USED + 2)) + TX + RX
    out += restart(RS_TX, 0, (TX_DESC, TX_AVAIL, TX_USED), 3) + TX
    out += restart(RS_RX | RS_TX, 0, (RX_DESC, RX_AVAIL, RX_USED), 16) + avail(0, 9) + PEEK + RX
    out += restart(RS_TX, 0, None, 4096) + TX
    return vring_hdr(VERSION_1, flags=CF_LOG | CF_LOG_USED | CF_INFL_RX | CF_INFL_TX) + out


def hdr_input(flags, gso, hdr_len, gso_size, cs, co, features, frame_len):
    return struct.pack("<BBHHHHH", flags, gso, hdr_len, gso_size, cs, co, 1) + \
        struct.pack("<QI", features, frame_len)


seeds = {
    "vring": {
        "burst_indirect_fill": burst_indirect_fill(),
        "mrg_held": mrg_held(),
        "inflight": inflight(),
        "log": log_on(),
        "evidx_inorder": evidx_inorder(),
        "burst_per_frame": burst_per_frame(),
        "single_tx_errors": single_tx_errors(),
        "rx_big_bufs": rx_big_bufs(),
        "legacy": legacy(),
        "indirect": indirect_tx(),
        "rx_frame": rx_frame_vmm(),
        "rx_pool_compact": rx_pool(512, 3),
        "rx_pool_enobufs": rx_pool(400, 3),
        "infl_batch_async": infl_batch_async(),
        "ring_layout": ring_layout(),
    },
    "vnet_hdr": {
        "plain": hdr_input(0, 0, 0, 0, 0, 0, CSUM, 60),
        "csum": hdr_input(1, 0, 0, 0, 34, 16, CSUM, 100),
        "tso4": hdr_input(1, 1, 54, 1448, 34, 16, CSUM | TSO4, 65000),
    },
}
for fuzzer, files in seeds.items():
    d = os.path.join(HERE, "corpus", fuzzer)
    os.makedirs(d, exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


# vhost-user sessions: records of (fd count + 11 * fd kind, length, bytes), as fuzz_vu.c reads
# them. Kinds: 0 a memfd then eventfds, 1 eventfds, 2 blocking eventfds, 3 blocking eventfds
# preloaded full, 4 epoll fds, 5 as 0 but the memfd cannot be sealed and is truncated to nothing
# once the port has handled the record. A memfd holds the record's bytes at its start.
FD_MEM, FD_EVENT, FD_BLOCKING, FD_FULL, FD_EPOLL, FD_SHRINK = range(6)


def vu_msg(req, payload=b"", flags=1):
    return struct.pack("<III", req, flags, len(payload)) + payload


def rec(msg, nfds=0, kind=FD_MEM):
    return bytes([nfds + 11 * kind]) + struct.pack("<H", len(msg)) + msg


def vu_session(mrg=True, ack=True, kick=FD_EVENT, call=FD_EVENT):
    feats = VERSION_1 | (MRG if mrg else 0) | F(30)
    uva, gpa = 0x7F0000000000, 0x100000
    out = rec(vu_msg(1)) + rec(vu_msg(15))
    out += rec(vu_msg(16, struct.pack("<Q", (1 << 3) if ack else 0)))
    out += rec(vu_msg(3)) + rec(vu_msg(2, struct.pack("<Q", feats), 1 | (8 if ack else 0)))
    out += rec(vu_msg(5, struct.pack("<II", 1, 0) + struct.pack("<QQQQ", gpa, 1 << 20, uva, 0)), 1)
    for ring in range(2):
        base = uva + 0x10000 * (ring + 1)
        out += rec(vu_msg(8, struct.pack("<II", ring, 256)))
        out += rec(vu_msg(10, struct.pack("<II", ring, 0)))
        out += rec(vu_msg(9, struct.pack("<IIQQQQ", ring, 0, base, base + 0x2000, base + 0x1000, 0)))
        out += rec(vu_msg(12, struct.pack("<Q", ring)), 1, kick)
        out += rec(vu_msg(13, struct.pack("<Q", ring)), 1, call)
        out += rec(vu_msg(18, struct.pack("<II", ring, 1)))
    out += rec(vu_msg(11, struct.pack("<II", 0, 0)))
    return out


# The sessions below speak in names: requests and flags (vu_proto.h), protocol features, and one
# layout: a 1 MiB memfd as guest memory at GPA, mapped by the frontend at UVA.
(GET_FEATURES, SET_FEATURES, SET_OWNER, RESET_OWNER, SET_MEM_TABLE, SET_LOG_BASE, SET_LOG_FD,
 SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE, GET_VRING_BASE, SET_VRING_KICK, SET_VRING_CALL,
 SET_VRING_ERR, GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES, GET_QUEUE_NUM, SET_VRING_ENABLE,
 SEND_RARP, NET_SET_MTU) = range(1, 21)
SET_VRING_ENDIAN, GET_CONFIG, SET_CONFIG, GET_INFLIGHT_FD, SET_INFLIGHT_FD = 23, 24, 25, 31, 32
GET_MAX_MEM_SLOTS, ADD_MEM_REG, REM_MEM_REG = 36, 37, 38
NEED_REPLY, NOFD, VRING_F_LOG = 8, 1 << 8, 1
PF_MQ, PF_LOG_SHMFD, PF_RARP, PF_REPLY_ACK, PF_MTU = range(5)
PF_INFLIGHT, PF_MEM_SLOTS = 12, 15
PF_ALL = sum(F(b) for b in (PF_MQ, PF_LOG_SHMFD, PF_RARP, PF_REPLY_ACK, PF_MTU, PF_INFLIGHT,
                            PF_MEM_SLOTS))
LOG_ALL, PROTOCOL_F, NET_MTU, NET_MQ = F(26), F(30), F(3), F(22)
FEATS = VERSION_1 | MRG | PROTOCOL_F | NET_MTU | NET_MQ  # fuzz_vu.c's port has an MTU, 2 pairs
UVA, GPA, MEMFD = 0x7F0000000000, 0x100000, 1 << 20
MAC = bytes.fromhex("525400123456") + bytes(2)
u64 = lambda v: struct.pack("<Q", v)
vstate = lambda i, n: struct.pack("<II", i, n)


def req(code, payload=b"", ack=False, nfds=0, kind=FD_MEM, memory=None):
    """One record: a request (NEED_REPLY if ack), with nfds fds of kind. memory, {offset: bytes},
    puts those bytes at those offsets of the record, each in a SET_CONFIG request after it (not
    supported: the port skips it): fuzz_vu.c copies the record to the start of its memfd, so the
    guest memory, inflight area or log the port maps from that fd holds them."""
    out = vu_msg(code, payload, 1 | (NEED_REPLY if ack else 0))
    for off, data in sorted((memory or {}).items()):
        pad = off - len(out) - 12
        assert pad >= 0 and 12 <= pad + len(data) <= 268
        out += vu_msg(SET_CONFIG, bytes(pad) + data)
    return rec(out, nfds, kind)


def region(gpa=GPA, size=MEMFD, uva=UVA, off=0):
    return struct.pack("<QQQQ", gpa, size, uva, off)


def mem_reg(code, ack=True, nfds=1, memory=None, **kw):  # ADD_MEM_REG / REM_MEM_REG
    return req(code, bytes(8) + region(**kw), ack, nfds, memory=memory)


def mem_table(memory=None, ack=True, kind=FD_MEM):
    return req(SET_MEM_TABLE, struct.pack("<II", 1, 0) + region(), ack, 1, kind, memory)


def inflight_msg(size, off, nq, qsize):  # QEMU's 24 bytes, tail padding included
    return struct.pack("<QQHHI", size, off, nq, qsize, 0)


# Rings in zeroed memory: ring i at 64 KiB * (i + 1) (desc, avail at +4 KiB, used at +8 KiB), up
# to 256 entries. The live TX ring: 8 entries in the memory record itself (right after a 52-byte
# ADD_MEM_REG or SET_MEM_TABLE and a carrier's header), one-descriptor chains of which the given
# heads are available, their frames zeros further on (a zero header: a plain frame, which the
# sink takes).
ZERO = lambda i: (0x10000 * (i + 1), 0x10000 * (i + 1) + 0x1000, 0x10000 * (i + 1) + 0x2000)
LIVE = (64, 192, 216)


def live_tx(heads=(0, 1, 2, 3)):
    d = b"".join(desc(GPA + 0x8000 + 0x100 * i, 72) for i in range(8))
    return {LIVE[0]: d + struct.pack("<HH", 0, len(heads)) + struct.pack(f"<{len(heads)}H", *heads)}


def vaddr(i, layout, flags=0, log=0):
    d, a, u = layout
    return struct.pack("<IIQQQQ", i, flags, UVA + d, UVA + u, UVA + a, log)


def ring_start(i, num=256, base=0, layout=None, kick=FD_EVENT, call=FD_EVENT, flags=0, log=0):
    """QEMU's ring start: size, base, addresses, kick, call (kick None: no fd, a polling one)."""
    out = req(SET_VRING_NUM, vstate(i, num), True) + req(SET_VRING_BASE, vstate(i, base), True)
    out += req(SET_VRING_ADDR, vaddr(i, layout or ZERO(i), flags, log), True)
    if kick is None:
        out += req(SET_VRING_KICK, u64(i | NOFD), True)
    else:
        out += req(SET_VRING_KICK, u64(i), True, 1, kick)
    return out + req(SET_VRING_CALL, u64(i), True, 1, call)


def enable(rings, on=1):
    return b"".join(req(SET_VRING_ENABLE, vstate(i, on), True) for i in rings)


def stop(rings):  # GET_VRING_BASE: the ring stops, its kick fd is dropped
    return b"".join(req(GET_VRING_BASE, vstate(i, 0)) for i in rings)


def restart(i, base):  # a reconnected frontend starts a stopped ring again where it left it
    out = req(SET_VRING_BASE, vstate(i, base), True)
    return out + req(SET_VRING_KICK, u64(i), True, 1, FD_EVENT)


def negotiate(pf=PF_ALL, calls=4):
    """QEMU's opening: features, protocol features, queue count, memory slots, owner; the call
    fds come early (vhost_virtqueue_init)."""
    out = req(GET_FEATURES) + req(GET_PROTOCOL_FEATURES) + req(SET_PROTOCOL_FEATURES, u64(pf))
    out += req(GET_QUEUE_NUM) + req(GET_MAX_MEM_SLOTS) + req(SET_OWNER) + req(GET_FEATURES)
    return out + b"".join(req(SET_VRING_CALL, u64(i), nfds=1, kind=FD_EVENT) for i in range(calls))


def vu_mq_inflight():
    # Everything QEMU can negotiate with us, both queue pairs. The inflight area we make
    # (GET_INFLIGHT_FD, 4 queues of 256; the reply carries its fd), then the frontend's own
    # (SET_INFLIGHT_FD, in the memfd at 4 KiB) replaces it; memory by ADD_MEM_REG, sent once
    # per queue pair as QEMU does (a repeat). Ring 3 has 128 entries: not tracked. Then pair 1
    # restarts as after a reconnect, at a base the area does not confirm.
    need = 4 * 4160
    out = negotiate() + req(GET_INFLIGHT_FD, inflight_msg(0, 0, 4, 256))
    out += req(SET_INFLIGHT_FD, inflight_msg(need, 0x1000, 4, 256), True, 1)
    out += req(SET_FEATURES, u64(FEATS), True) + mem_reg(ADD_MEM_REG) * 2
    for i in range(4):
        out += ring_start(i, num=128 if i == 3 else 256)
    out += enable(range(4)) + req(NET_SET_MTU, u64(1500), True) + req(SEND_RARP, MAC, True)
    out += stop([2, 3]) + restart(2, 5) + restart(3, 0) + stop(range(4))
    return out


def vu_inflight_resubmit():
    # A device restarted under a frontend whose inflight area (in the memfd, at offset 48, laid
    # out for pair 0's rings of 8) says TX heads 1 and 0 were taken and never used; the TX ring
    # (live, in guest memory) offers heads 1, 0, 2, 3: the port takes 1 and 0 again, then 2
    # and 3, and the sink sends them. Then TX stops and restarts where it left off.
    hist = struct.pack("<QHHHH", 0, 1, 8, 0, 0)  # features, version 1, desc_num 8, batch, used
    d0, d1 = struct.pack("<B5xHQ", 1, 0, 7), struct.pack("<B5xHQ", 1, 0, 3)
    area = {48: bytes(192) + hist + d0 + d1}  # ring 0's region (zeros: version 0), ring 1's
    out = negotiate(calls=2)
    out += req(SET_INFLIGHT_FD, inflight_msg(2 * 192, 48, 2, 8), True, 1, memory=area)
    out += req(SET_FEATURES, u64(FEATS), True) + mem_reg(ADD_MEM_REG, memory=live_tx((1, 0, 2, 3)))
    out += ring_start(0, 8) + ring_start(1, 8, layout=LIVE) + enable([0, 1])
    out += stop([1]) + restart(1, 4) + stop([0, 1])
    return out


def vu_log():
    # Live migration: LOG_ALL acked, a dirty log of 4 KiB in the memfd (LOG_SHMFD: the port
    # answers with an empty reply), the TX ring logging its used ring writes (VRING_F_LOG at the
    # used ring's address) while the sink takes its chains; the log grows (a new one replaces
    # it), a log the file cannot hold is refused, SET_LOG_FD is taken and ignored, and the
    # migration is cancelled (LOG_ALL off).
    used = GPA + LIVE[2]
    out = negotiate(calls=2) + req(SET_FEATURES, u64(FEATS | LOG_ALL), True)
    out += mem_table(live_tx())
    out += req(SET_LOG_BASE, struct.pack("<QQ", 0x1000, 0), True, 1)
    out += ring_start(0, 8) + ring_start(1, 8, layout=LIVE, flags=VRING_F_LOG, log=used)
    out += enable([0, 1]) + req(SET_LOG_BASE, struct.pack("<QQ", 0x2000, 0x3000), True, 1)
    out += req(SET_LOG_BASE, struct.pack("<QQ", MEMFD, 0x1000), True, 1)
    out += req(SET_LOG_FD, b"", True, 1, FD_EVENT) + req(SET_FEATURES, u64(FEATS), True)
    out += stop([0, 1])
    return out


def vu_mem_slots():
    # Memory by ADD_MEM_REG / REM_MEM_REG (CONFIGURE_MEM_SLOTS): region A twice (a repeat),
    # region B from the memfd's second 64 KiB, one overlapping A (refused); rings run in A.
    # Removals: one never added (no fd: nothing to do), B, B again (a repeat), then A under the
    # running rings (they stop: outside the memory table) and A back (they run again). Last,
    # SET_MEM_TABLE replaces the whole map.
    b = dict(gpa=0x400000, size=0x10000, uva=UVA + 0x10000000, off=0x10000)
    out = negotiate(calls=2) + req(SET_FEATURES, u64(FEATS), True)
    out += mem_reg(ADD_MEM_REG) * 2 + mem_reg(ADD_MEM_REG, **b)
    out += mem_reg(ADD_MEM_REG, gpa=GPA + 0x1000, size=0x1000, uva=UVA + 0x20000000)
    out += ring_start(0) + ring_start(1) + enable([0, 1])
    out += mem_reg(REM_MEM_REG, nfds=0, gpa=0x900000, size=0x1000, uva=0)
    out += mem_reg(REM_MEM_REG, **b) + mem_reg(REM_MEM_REG, **b)
    out += mem_reg(REM_MEM_REG) + mem_reg(ADD_MEM_REG) + mem_table() + stop([0, 1])
    return out


def vu_config():
    # GET_CONFIG (answered though CONFIG is not offered): all of the virtio-net config space we
    # know, the MAC, status, max_virtqueue_pairs, the MTU, nothing at its end; then reads past
    # it, a size that disagrees with the message, and SET_CONFIG (not supported), acked.
    cfg = lambda off, size, fill=None: struct.pack("<III", off, size, 0) + bytes(fill or size)
    out = req(GET_PROTOCOL_FEATURES) + req(SET_PROTOCOL_FEATURES, u64(F(PF_REPLY_ACK)))
    for off, size in ((0, 12), (0, 6), (6, 2), (8, 2), (10, 2), (12, 0)):
        out += req(GET_CONFIG, cfg(off, size), True)
    out += req(GET_CONFIG, cfg(4, 12), True) + req(GET_CONFIG, cfg(0, 6, 8), True)
    out += req(GET_CONFIG, cfg(0, 256), True) + req(SET_CONFIG, cfg(0, 6), True)
    return out


def vu_reset_owner():
    # Both pairs running (SET_MEM_TABLE), pair 1 disabled and enabled again (ethtool -L),
    # error fds for two rings (an eventfd, then "no fd"), a RARP; then RESET_OWNER mid-session
    # and a new owner sets pair 0 up again from scratch.
    out = negotiate() + req(SET_FEATURES, u64(FEATS), True) + mem_table()
    for i in range(4):
        out += ring_start(i)
    out += enable(range(4)) + enable([2, 3], 0) + enable([2, 3])
    out += req(SET_VRING_ERR, u64(0), True, 1, FD_EVENT) + req(SET_VRING_ERR, u64(1 | NOFD), True)
    out += req(SEND_RARP, MAC) + req(RESET_OWNER)
    out += req(SET_OWNER) + req(SET_FEATURES, u64(FEATS), True) + mem_table()
    out += ring_start(0) + ring_start(1) + enable([0, 1]) + stop([0, 1])
    return out


def vu_no_protocol_features():
    # A frontend that acks no PROTOCOL_FEATURES: no REPLY_ACK (NEED_REPLY is ignored), no
    # SET_VRING_ENABLE: each ring is enabled as soon as it has a kick fd; both pairs.
    out = req(GET_FEATURES) + req(SET_OWNER) + req(SET_FEATURES, u64(VERSION_1 | MRG | NET_MQ))
    out += mem_table()
    for i in range(4):
        out += ring_start(i)
    return out + stop(range(4))


def vu_ring_restart():
    # Ring lifecycle: size and base changed while started (refused, acked), ring 0 moved to a
    # misaligned descriptor table (accepted, not started), then back; both stopped
    # (GET_VRING_BASE) and started again as after a reconnect, ring 1 without a kick fd (a
    # polling frontend); out-of-range index, unknown address flags, a size that is no power of
    # two and a base that is no 16-bit index, all refused.
    out = negotiate(calls=2) + req(SET_FEATURES, u64(FEATS), True) + mem_table()
    out += ring_start(0) + ring_start(1) + enable([0, 1])
    out += req(SET_VRING_NUM, vstate(1, 128), True) + req(SET_VRING_BASE, vstate(1, 3), True)
    d, a, u = ZERO(0)
    out += req(SET_VRING_ADDR, vaddr(0, (d + 8, a, u)), True)
    out += req(SET_VRING_ADDR, vaddr(0, ZERO(0)), True)
    out += stop([0, 1]) + restart(0, 0) + req(SET_VRING_BASE, vstate(1, 0), True)
    out += req(SET_VRING_KICK, u64(1 | NOFD), True)
    out += req(SET_VRING_NUM, vstate(7, 256), True)
    out += req(SET_VRING_ADDR, vaddr(0, ZERO(0), 6), True)
    out += req(SET_VRING_NUM, vstate(2, 100), True) + req(SET_VRING_BASE, vstate(2, 0x10000), True)
    return out + stop([0, 1])


def vu_feature_errors():
    # Requests whose protocol feature was not negotiated (REPLY_ACK only), each refused with a
    # failed ack; then, with all of them, values out of range: inflight layouts, an inflight
    # area larger than its file or misaligned, an MTU too small, a log of no size, features
    # never offered; SET_VRING_ENDIAN (not supported) and a request number we do not know.
    inf = inflight_msg(4 * 4160, 0, 4, 256)
    out = negotiate(F(PF_REPLY_ACK), 0)
    out += req(SET_LOG_BASE, struct.pack("<QQ", 0x1000, 0), True, 1)
    out += req(GET_INFLIGHT_FD, inf, True) + req(SET_INFLIGHT_FD, inf, True, 1)
    out += mem_reg(ADD_MEM_REG) + mem_reg(REM_MEM_REG) + req(NET_SET_MTU, u64(1500), True)
    out += req(SET_PROTOCOL_FEATURES, u64(PF_ALL), True)
    for nq, qs in ((4, 3), (0, 256), (9, 256), (4, 0)):
        out += req(GET_INFLIGHT_FD, inflight_msg(0, 0, nq, qs), True)
    out += req(SET_INFLIGHT_FD, inflight_msg(4 * 4160, MEMFD - 4096, 4, 256), True, 1)
    out += req(SET_INFLIGHT_FD, inflight_msg(4 * 4160, 4, 4, 256), True, 1)
    out += req(SET_INFLIGHT_FD, inflight_msg(100, 0, 4, 256), True, 1)
    out += req(NET_SET_MTU, u64(20), True) + req(SET_LOG_BASE, struct.pack("<QQ", 0, 0), True, 1)
    out += req(SET_FEATURES, u64(FEATS | F(55)), True) + req(SET_PROTOCOL_FEATURES, u64(F(9)), True)
    out += req(SET_VRING_ENDIAN, vstate(0, 0), True) + req(99, b"", True)
    return out


def vu_refusals():
    # Malformed requests a frontend can send on a live session, each refused with a failed ack
    # (REPLY_ACK): a memory table whose fds disagree with it, a region past the end of its
    # file, ring addresses outside the memory, ring indices out of range, vring fd payloads
    # with unknown bits or "no fd" beside an fd, an enable that is neither 0 nor 1. Last, a
    # request we do not know without NEED_REPLY: the port drops the connection.
    bad = 0x7
    out = negotiate(F(PF_REPLY_ACK), 0) + req(SET_FEATURES, u64(FEATS), True)
    out += req(SET_MEM_TABLE, struct.pack("<II", 2, 0) + region() * 2, True, 1)
    out += req(SET_MEM_TABLE, struct.pack("<II", 1, 0) + region(off=MEMFD), True, 1)
    out += mem_table() + req(SET_VRING_NUM, vstate(0, 256), True)
    out += req(SET_VRING_ADDR, vaddr(0, (MEMFD, 0x1000, 0x2000)), True)
    out += req(SET_VRING_NUM, vstate(bad, 256), True) + req(SET_VRING_BASE, vstate(bad, 0), True)
    out += req(SET_VRING_ADDR, vaddr(bad, ZERO(0)), True)
    out += req(GET_VRING_BASE, vstate(bad, 0), True)
    out += req(SET_VRING_ENABLE, vstate(bad, 1), True) + req(SET_VRING_ENABLE, vstate(0, 2), True)
    for code in (SET_VRING_KICK, SET_VRING_CALL, SET_VRING_ERR):
        out += req(code, u64(bad), True, 1, FD_EVENT) + req(code, u64(0x200), True, 1, FD_EVENT)
        out += req(code, u64(NOFD), True, 1, FD_EVENT)
    return out + req(99)


def vu_live_full_call():
    # The TX ring has chains at once, and its call fd is a blocking eventfd that is full: the
    # worker blocks signalling it until the watchdog cuts it short and the port drops us.
    out = negotiate(calls=0) + req(SET_FEATURES, u64(FEATS), True) + mem_table(live_tx())
    return out + ring_start(1, 8, layout=LIVE, call=FD_FULL) + enable([1])


def vu_shrink(what):
    # The frontend truncates a file the port has mapped (SIGBUS on the next touch, which the
    # guard patches; the port then drops the connection): guest memory, touched when a ring
    # starts (the used index is read); the dirty log, touched by the worker when it logs the
    # TX ring's used writes; the inflight area, touched when a ring starts being tracked.
    kind = lambda w: FD_SHRINK if w == what else FD_MEM
    out = negotiate(calls=0) + req(SET_FEATURES, u64(FEATS | LOG_ALL), True)
    out += req(SET_INFLIGHT_FD, inflight_msg(2 * 192, 0x1000, 2, 8), True, 1, kind("inflight"))
    out += mem_table(live_tx(), kind=kind("memory"))
    out += req(SET_LOG_BASE, struct.pack("<QQ", 0x1000, 0x1000), True, 1, kind("log"))
    out += ring_start(1, 8, layout=LIVE, flags=VRING_F_LOG, log=GPA + LIVE[2]) + enable([1])
    return out + stop([1])


d = os.path.join(HERE, "corpus", "vu")
os.makedirs(d, exist_ok=True)
for name, data in {"session": vu_session(), "session_noack": vu_session(False, False),
                   "session_blocking_kick": vu_session(kick=FD_BLOCKING),
                   "session_full_call": vu_session(call=FD_FULL),
                   "session_epoll_kick": vu_session(ack=False, kick=FD_EPOLL),
                   "get_features": rec(vu_msg(1)),
                   "bad_version": rec(vu_msg(1, flags=2)),
                   "mq_inflight": vu_mq_inflight(),
                   "inflight_resubmit": vu_inflight_resubmit(),
                   "log": vu_log(),
                   "mem_slots": vu_mem_slots(),
                   "config": vu_config(),
                   "reset_owner": vu_reset_owner(),
                   "no_protocol_features": vu_no_protocol_features(),
                   "ring_restart": vu_ring_restart(),
                   "feature_errors": vu_feature_errors(),
                   "refusals": vu_refusals(),
                   "live_full_call": vu_live_full_call(),
                   "shrink_memory": vu_shrink("memory"),
                   "shrink_log": vu_shrink("log"),
                   "shrink_inflight": vu_shrink("inflight"),
                   # the port answers after the frontend has gone: the reply fails (EPIPE)
                   "reply_flood": rec(vu_msg(GET_FEATURES) * 100),
                   # more fds than a message may carry (8): refused, every one closed
                   "fd_overflow": req(SET_MEM_TABLE, struct.pack("<II", 1, 0) + region(),
                                      nfds=10)}.items():
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)
