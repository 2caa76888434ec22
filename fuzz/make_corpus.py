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


def vring_input(features, num=8, indirect=False, rx_len=2048, frames=(72, 1500)):
    mem = bytearray(MEM_SIZE)
    for i in range(num):  # RX: writable buffers
        mem[0x0 + 16 * i:0x0 + 16 * i + 16] = desc(MEM_GPA + 0x8000 + i * 0x400, rx_len, 2)
    mem[0x1000:0x1004] = struct.pack("<HH", 0, num)
    for i in range(num):
        mem[0x1004 + 2 * i:0x1006 + 2 * i] = struct.pack("<H", i)
    frame = bytes(12) + bytes(range(60))
    mem[0xC000:0xC000 + len(frame)] = frame
    if indirect:  # TX chain as an indirect table: header, then frame
        mem[0x4000:0x4010] = desc(MEM_GPA + 0xB000, 32, 4)
        mem[0xB000:0xB020] = desc(MEM_GPA + 0xC000, 12, 1, 1) + desc(MEM_GPA + 0xC00C, 60)
    else:
        mem[0x4000:0x4010] = desc(MEM_GPA + 0xC000, len(frame))
    mem[0x5000:0x5006] = struct.pack("<HHH", 0, 1, 0)
    head = struct.pack("<BQHB", num.bit_length() - 1, features, 1536, 0) + bytes(4)
    tail = b"".join(struct.pack("<H", n) + bytes([i & 0xFF for i in range(n)]) for n in frames)
    return head + bytes(mem) + tail


def hdr_input(flags, gso, hdr_len, gso_size, cs, co, features, frame_len):
    return struct.pack("<BBHHHHH", flags, gso, hdr_len, gso_size, cs, co, 1) + \
        struct.pack("<QI", features, frame_len)


seeds = {
    "vring": {
        "mrg_evidx": vring_input(VERSION_1 | MRG | EVENT_IDX),
        "mrg_small_bufs": vring_input(VERSION_1 | MRG, rx_len=256, frames=(9000, 60)),
        "indirect": vring_input(VERSION_1 | INDIRECT, indirect=True, rx_len=1536),
        "legacy": vring_input(0, num=4, rx_len=1600),
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


# vhost-user sessions: records of (nfds, length, bytes), as fuzz_vu.c reads them.
def vu_msg(req, payload=b"", flags=1):
    return struct.pack("<III", req, flags, len(payload)) + payload


def rec(msg, nfds=0):
    return bytes([nfds]) + struct.pack("<H", len(msg)) + msg


def vu_session(mrg=True, ack=True):
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
        out += rec(vu_msg(12, struct.pack("<Q", ring)), 1)
        out += rec(vu_msg(13, struct.pack("<Q", ring)), 1)
        out += rec(vu_msg(18, struct.pack("<II", ring, 1)))
    out += rec(vu_msg(11, struct.pack("<II", 0, 0)))
    return out


d = os.path.join(HERE, "corpus", "vu")
os.makedirs(d, exist_ok=True)
for name, data in {"session": vu_session(), "session_noack": vu_session(False, False),
                   "get_features": rec(vu_msg(1)),
                   "bad_version": rec(vu_msg(1, flags=2))}.items():
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)
