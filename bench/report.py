# SPDX-License-Identifier: MIT
"""Tables and plots for bench/run.sh: reads RESULTS/raw/{machine.txt,vhost,tap,scale}.csv and
writes RESULTS/{vhost,tap,scale}.md, vhost.png, scale.png and summary.md (everything in one).
Every part whose raw CSV is there is reported. Usage: python3 bench/report.py RESULTS. The plots
need matplotlib (bench/setup.sh)."""
import csv
import math
import os
import statistics
import sys

RES = sys.argv[1]
RAW = os.path.join(RES, "raw")
DIRS = {"tx": "frontend txonly → backend", "rx": "backend → frontend rxonly",
        "io": "io round trip"}
PEERS = [("dpdk", "DPDK vhost"), ("virtap-poll", "virtap busy-poll"),
         ("virtap-notify", "virtap notify")]
# The placement probe (vt_pingpong, ns per cache-line round trip CPU 0 <-> CPU 1) falls in two
# clusters on these machines; below this the vCPUs are "near" (N), above "far" (F). A figure
# whose probes before and after disagree is "mixed" (M): the placement changed meanwhile.
NEAR_NS = 150


def num(s):
    try:
        v = float(s)
    except (TypeError, ValueError):
        return math.nan
    return v


def ok(xs):
    return [x for x in xs if not math.isnan(x)]


def mmm(xs, fmt="{:.2f}"):
    """median (min–max), or a dash."""
    xs = ok(xs)
    if not xs:
        return "—"
    med = statistics.median(xs)
    if len(xs) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(xs))}–{fmt.format(max(xs))})"


def med(xs):
    xs = ok(xs)
    return statistics.median(xs) if xs else math.nan


def cell(x, fmt="{:.2f}"):
    return "—" if math.isnan(x) else fmt.format(x)


def place(r):
    """N, F or M for a figure from its probes before and after."""
    b = num(r.get("probe_ns"))
    a = num(r.get("probe_after_ns")) if r.get("probe_after_ns") else b
    if math.isnan(b) or math.isnan(a):
        return "?"
    cb, ca = ("N" if b < NEAR_NS else "F"), ("N" if a < NEAR_NS else "F")
    return cb if cb == ca else "M"


def read_csv(name):
    path = os.path.join(RAW, name)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def machine():
    path = os.path.join(RAW, "machine.txt")
    return open(path).read().strip() if os.path.exists(path) else ""


def vhost(out):
    rows = read_csv("vhost.csv")
    if not rows:
        return ""
    runs = sorted({int(r["run"]) for r in rows})
    keys = []
    for r in rows:
        k = (r["dir"], int(r["size"]), int(r["mrg"]))
        if k not in keys:
            keys.append(k)
    by = {}
    for r in rows:
        by[(r["dir"], int(r["size"]), int(r["mrg"]), r["peer"], int(r["run"]))] = r
    peers = [p for p in PEERS if any(r["peer"] == p[0] for r in rows)]
    lines = [
        f"vhost-user loopback, {len(runs)} run(s). Frontend: dpdk-testpmd net_virtio_user on CPU 0; "
        "backend on CPU 1: dpdk-testpmd net_vhost (DPDK vhost library) or virtap (one worker). "
        "Mpps: median (min–max) of the runs, from the frontend testpmd's own Rx-pps/Tx-pps; "
        "Gbit/s: the same in Ethernet frame bytes (no CRC, preamble or gap). "
        f"Placement per run, one letter per figure (DPDK, then virtap's): N near, F far, M "
        f"changed during the figure, from vt_pingpong before and after each figure (ns per "
        f"cache-line round trip CPU 0 ↔ CPU 1; N below {NEAR_NS} ns). virtap/DPDK compares "
        f"like with like: median (min–max) over the runs where both figures, measured back to "
        f"back, are N or both F, of virtap's figure over DPDK's; [K/R]: K such runs of R (with "
        f"none, the median over all runs in parentheses).",
        "",
    ]
    head = "| direction | frame | mrg_rxbuf | placement per run |"
    sep = "|---|---|---|---|"
    for p, label in peers:
        head += f" {label} Mpps | Gbit/s |"
        sep += "---|---|"
        if p != "dpdk":
            head += " virtap/DPDK |"
            sep += "---|"
    lines += [head, sep]
    notes, xdev = [], []
    plot, like_tab = {}, {}
    for k in keys:
        d, size, mrg = k
        probes = []
        for run in runs:
            probes.append("".join(place(by[k + (p, run)]) if k + (p, run) in by else "-"
                                  for p, _ in peers))
        line = f"| {DIRS.get(d, d)} | {size} B | {mrg} | {' · '.join(probes)} |"
        base = {run: num(by[k + ("dpdk", run)]["mpps"]) for run in runs
                if k + ("dpdk", run) in by}
        for p, label in peers:
            vals = [num(by[k + (p, run)]["mpps"]) for run in runs if k + (p, run) in by]
            gb = [num(by[k + (p, run)]["gbps"]) for run in runs if k + (p, run) in by]
            plot[k + (p,)] = ok(vals)
            line += f" {mmm(vals)} | {mmm(gb)} |"
            if p != "dpdk":
                pairs = [(num(by[k + (p, run)]["mpps"]) / base[run],
                          place(by[k + (p, run)]), place(by[k + ("dpdk", run)]))
                         for run in runs
                         if k + (p, run) in by and run in base and base[run] > 0]
                like = [x for x, a, b in pairs if a == b and a in "NF" and not math.isnan(x)]
                if like:
                    line += f" {mmm(like, '{:.2f}x')} [{len(like)}/{len(runs)}] |"
                else:
                    line += f" — ({mmm([x for x, _, _ in pairs], '{:.2f}x')}) [0/{len(runs)}] |"
            for run in runs:
                r = by.get(k + (p, run))
                if r:
                    like_tab.setdefault(k + (p, place(r)), []).append(num(r["mpps"]))
            for run in runs:
                r = by.get(k + (p, run))
                if not r:
                    continue
                if r["status"] != "ok":
                    notes.append(f"run {run}, {DIRS.get(d, d)} {size} B mrg_rxbuf={mrg}, "
                                 f"{label}: {r['status']}")
                x, m = num(r["xcheck_mpps"]), num(r["mpps"])
                if p != "dpdk" and not math.isnan(x) and m > 0:
                    xdev.append((abs(x / m - 1), f"{DIRS.get(d, d)} {size} B mrg={mrg} {label} "
                                 f"run {run}: testpmd {m:.3f}, virtap {x:.3f} Mpps"))
        lines.append(line)
    lines.append("")
    lines += ["Like with like: median Mpps [figures] of the figures measured at a steady near "
              "(N) or far (F) placement, over all runs.", ""]
    head = "| direction | frame | mrg_rxbuf |"
    sep = "|---|---|---|"
    for c in "NF":
        for _, label in peers:
            head += f" {label} {c} |"
            sep += "---|"
    lines += [head, sep]
    for k in keys:
        d, size, mrg = k
        line = f"| {DIRS.get(d, d)} | {size} B | {mrg} |"
        for c in "NF":
            for p, _ in peers:
                v = ok(like_tab.get(k + (p, c), []))
                line += f" {statistics.median(v):.2f} [{len(v)}] |" if v else " — |"
        lines.append(line)
    lines.append("")
    lines += ["All back-to-back pairs, any placement (virtap's figure over DPDK's in the same run, "
              "every row): median, and how many pairs are below 1.0x.", ""]
    for d in [d for d in DIRS if any(k[0] == d for k in keys)]:
        for p, label in peers[1:]:
            rs = ok([num(by[k + (p, run)]["mpps"]) / num(by[k + ("dpdk", run)]["mpps"])
                     for k in keys if k[0] == d for run in runs
                     if k + (p, run) in by and k + ("dpdk", run) in by
                     and num(by[k + ("dpdk", run)]["mpps"]) > 0])
            if rs:
                lines.append(f"* {DIRS[d]}, {label}: {statistics.median(rs):.2f}x "
                             f"({min(rs):.2f}x–{max(rs):.2f}x), {sum(x < 1 for x in rs)} of "
                             f"{len(rs)} below 1.0x")
    lines.append("")
    if xdev:
        worst = max(xdev)
        mean = statistics.median(x for x, _ in xdev)
        lines.append(f"Cross-check: virtap's own counters (two SIGUSR1 dumps at the window's "
                     f"edges) against testpmd's rate: median deviation {mean * 100:.1f} %, "
                     f"worst {worst[0] * 100:.1f} % ({worst[1]}).")
        lines.append("")
    if notes:
        lines.append("Problems: " + "; ".join(notes) + ".")
        lines.append("")
    text = "\n".join(lines)
    open(os.path.join(out, "vhost.md"), "w").write(text + "\n")
    plot_vhost(out, keys, peers, plot)
    return text


def plot_vhost(out, keys, peers, data):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("report: no matplotlib, no plot (bench/setup.sh installs python3-matplotlib)",
              file=sys.stderr)
        return
    dirs = [d for d in DIRS if any(k[0] == d for k in keys)]
    fig, axes = plt.subplots(1, len(dirs), figsize=(5.5 * len(dirs), 4.5), squeeze=False)
    colors = {"dpdk": "#4c72b0", "virtap-poll": "#dd8452", "virtap-notify": "#c9a227"}
    width = 0.8 / len(peers)
    for ax, d in zip(axes[0], dirs):
        ks = [k for k in keys if k[0] == d]
        for j, (p, label) in enumerate(peers):
            xs, meds, lo, hi = [], [], [], []
            for i, k in enumerate(ks):
                v = data.get(k + (p,), [])
                m = statistics.median(v) if v else 0
                xs.append(i + (j - (len(peers) - 1) / 2) * width)
                meds.append(m)
                lo.append(m - min(v) if v else 0)
                hi.append(max(v) - m if v else 0)
            ax.bar(xs, meds, width, yerr=[lo, hi], capsize=2, label=label,
                   color=colors.get(p))
        ax.set_xticks(range(len(ks)))
        ax.set_xticklabels([f"{k[1]} B\nmrg={k[2]}" for k in ks], fontsize=8)
        ax.set_title(DIRS[d])
        ax.set_ylabel("Mpps (median, min–max)")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("vhost-user loopback: testpmd virtio-user frontend vs DPDK vhost / virtap")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "vhost.png"), dpi=110)
    plt.close(fig)


def tap(out):
    rows = read_csv("tap.csv")
    if not rows:
        return ""
    runs = sorted({int(r["run"]) for r in rows})
    by = {(r["path"], r["mode"], int(r["size"]), int(r["run"])): r for r in rows}
    sizes = sorted({int(r["size"]) for r in rows})
    probes = {}
    for r in rows:
        probes.setdefault(int(r["run"]), {})[r["path"]] = place(r)
    vpaths = [(p, n) for p, n in (("virtap-poll", "virtap busy-poll"),
                                  ("virtap-notify", "virtap notify"), ("virtap", "virtap"))
              if any(r["path"] == p for r in rows)]
    lines = [
        f"TAP path, {len(runs)} run(s); placement per run (ceiling, then virtap's): "
        f"{' · '.join(probes[r].get('ceiling', '-') + ''.join(probes[r].get(p, '-') for p, _ in vpaths) for r in runs)}. Ceiling: vt_tap_ceiling, one thread doing "
        "write() or read() of header + frame on a TAP with a 12-byte vnet header, pinned to "
        "CPU 1; read() is timed over batches of 256 frames that an AF_PACKET generator on CPU 0 "
        "queued while the reader waited (the per-frame cost of read() alone). virtap: vt_loopback, virtap's worker "
        "(pinned to CPU 1) moving the frames between the TAP and a fake guest's ring (rx: TAP → guest ring, "
        "tx: guest ring → TAP; generator and guest on CPU 0), in busy-poll and notification mode. RX is "
        "timed two ways: like the ceiling's read() (vt_loopback --rx-batch 256: 256 frames queued in the TAP "
        "while the guest has no buffers out, then timed from posting 256 buffers until the used index covers the last one; busy-poll with a "
        "2 ms window there, longer than the generator's queueing between batches, so that the worker keeps "
        "polling through it as the ceiling's reader does), "
        "and with the generator running alongside (its own cost on the other vCPU and the TAP queue's "
        "lock shared with it are in that figure; the ceiling has no counterpart). TX goes to "
        "the TAP in bursts of up to 32 frames per io_uring_enter. Mpps median (min–max); ratio: median over runs of "
        "virtap/ceiling measured in the same run.",
        "",
        "| direction | frame | ceiling Mpps | Gbit/s |" +
        "".join(f" {n} Mpps | Gbit/s | /ceiling |" for _, n in vpaths),
        "|---|---|---|---|" + "---|---|---|" * len(vpaths),
    ]
    for vmode, cmode, label in (("rxbatch", "read", "TAP → guest ring (read), queued batches"),
                                ("rx", "read", "TAP → guest ring, generator running alongside"),
                                ("tx", "write", "guest ring → TAP (write)")):
        for s in sizes:
            c = [num(by[("ceiling", cmode, s, r)]["mpps"]) for r in runs
                 if ("ceiling", cmode, s, r) in by]
            cg = [num(by[("ceiling", cmode, s, r)]["gbps"]) for r in runs
                  if ("ceiling", cmode, s, r) in by]
            if not c or not any((p, vmode, s, r) in by for p, _ in vpaths for r in runs):
                continue
            line = f"| {label} | {s} B | {mmm(c, '{:.3f}')} | {mmm(cg)} |"
            for p, _ in vpaths:
                v = [num(by[(p, vmode, s, r)]["mpps"]) for r in runs if (p, vmode, s, r) in by]
                vg = [num(by[(p, vmode, s, r)]["gbps"]) for r in runs if (p, vmode, s, r) in by]
                ratios = [num(by[(p, vmode, s, r)]["mpps"]) /
                          num(by[("ceiling", cmode, s, r)]["mpps"]) for r in runs
                          if (p, vmode, s, r) in by and ("ceiling", cmode, s, r) in by
                          and num(by[("ceiling", cmode, s, r)]["mpps"]) > 0]
                line += (f" {mmm(v, '{:.3f}')} | {mmm(vg)} | "
                         f"{mmm([x * 100 for x in ratios], '{:.0f} %')} |")
            lines.append(line)
    lines.append("")
    text = "\n".join(lines)
    open(os.path.join(out, "tap.md"), "w").write(text + "\n")
    return text


def scale(out):
    rows = read_csv("scale.csv")
    if not rows:
        return ""
    runs = sorted({int(r["run"]) for r in rows})
    ports = sorted({int(r["ports"]) for r in rows})
    modes = [m for m in ("poll", "shared", "notify") if any(r["mode"] == m for r in rows)]
    labels = {"poll": "busy-poll", "shared": "busy-poll, one shared worker", "notify": "notify"}
    lines = [
        f"Scaling, {len(runs)} run(s): one virtap (taskset CPU 1, --backend sink; one worker "
        "thread per port, or with 'one shared worker' a single busy-polling worker for all "
        "ports, worker=pmd0) with N ports, fed by ONE dpdk-testpmd on CPU 0 with N net_virtio_user "
        "ports (txonly, 64 B, one forwarding core for all). Aggregate Mpps: sum of the ports' "
        "Tx-pps, median (min–max); virtap counters: the same from virtap's SIGUSR1 dumps. RSS: "
        "virtap's VmRSS (KiB) with the ports listening but none connected, and with all N "
        "connected at the end of the window; per port = (RSS_N - RSS_0) / N. Guest memory is "
        "2 MiB hugepages (counted in HugetlbPages, not VmRSS) when hugepages are in use.",
        "",
        "| ports | virtap mode | placement per run | aggregate Mpps | virtap counters Mpps | "
        "RSS 0 connected | RSS N connected | per port | of which anon |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    by = {(int(r["ports"]), r["mode"], int(r["run"])): r for r in rows}
    plot = {}
    notes = []
    for n in ports:
        for m in modes:
            rs = [by[(n, m, r)] for r in runs if (n, m, r) in by]
            if not rs:
                continue
            agg = [num(r["mpps"]) for r in rs]
            plot[(n, m)] = ok(agg)
            xc = [num(r["xcheck_mpps"]) for r in rs]
            r0 = [num(r["rss0_kib"]) for r in rs]
            rn = [num(r["rssn_kib"]) for r in rs]
            per = [(num(r["rssn_kib"]) - num(r["rss0_kib"])) / n for r in rs]
            anon = [(num(r["anonn_kib"]) - num(r["anon0_kib"])) / n for r in rs]
            label = labels[m]
            lines.append(f"| {n} | {label} | {' · '.join(place(r) for r in rs)} | "
                         f"{mmm(agg)} | {mmm(xc)} | {cell(med(r0), '{:.0f}')} | "
                         f"{cell(med(rn), '{:.0f}')} | {cell(med(per), '{:.0f}')} KiB | "
                         f"{cell(med(anon), '{:.0f}')} KiB |")
            notes += [f"run {r['run']}, {n} ports {label}: {r['status']}" for r in rs
                      if r["status"] != "ok"]
    lines.append("")
    if notes:
        lines += ["Problems: " + "; ".join(notes) + ".", ""]
    text = "\n".join(lines)
    open(os.path.join(out, "scale.md"), "w").write(text + "\n")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 4))
        for m in modes:
            xs = [n for n in ports if plot.get((n, m))]
            ax.errorbar(xs, [statistics.median(plot[(n, m)]) for n in xs],
                        yerr=[[statistics.median(plot[(n, m)]) - min(plot[(n, m)]) for n in xs],
                              [max(plot[(n, m)]) - statistics.median(plot[(n, m)]) for n in xs]],
                        marker="o", capsize=3, label=f"virtap {labels[m]}")
        ax.set_xscale("log", base=2)
        ax.set_xticks(ports)
        ax.set_xticklabels([str(n) for n in ports])
        ax.set_xlabel("ports (one virtio_user each, one testpmd core)")
        ax.set_ylabel("aggregate Mpps, 64 B")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(out, "scale.png"), dpi=110)
        plt.close(fig)
    except ImportError:
        pass
    return text


def probes():
    """One line on every placement probe of the run: spread and how often near/far/mixed."""
    vals, places = [], []
    for name in ("vhost.csv", "tap.csv", "scale.csv"):
        for r in read_csv(name):
            vals += ok([num(r.get("probe_ns")), num(r.get("probe_after_ns"))])
            places.append(place(r))
    if not vals:
        return ""
    n = len(places)
    share = ", ".join(f"{c} {100 * places.count(c) / n:.0f} %" for c in "NFM")
    return (f"placement probes (vt_pingpong, ns per round trip CPU 0 <-> CPU 1): {len(vals)} "
            f"probes, min {min(vals):.0f} / median {statistics.median(vals):.0f} / max "
            f"{max(vals):.0f} ns; figures {share} (N < {NEAR_NS} ns before and after)")


def main():
    parts = [("vhost-user loopback (DPDK vhost vs virtap)", vhost(RES)),
             ("TAP path vs the raw TAP ceiling", tap(RES)),
             ("Scaling: ports through one virtap", scale(RES))]
    text = "# Benchmark results\n\n```\n" + machine() + "\n" + probes() + "\n```\n"
    for title, body in parts:
        if body:
            text += f"\n## {title}\n\n{body}\n"
    open(os.path.join(RES, "summary.md"), "w").write(text)
    print(text)


main()
