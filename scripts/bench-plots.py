#!/usr/bin/env python3
"""Renders docs/benchmarks.md's tables and docs/img/*.png from docs/data/.

Usage: python3 scripts/bench-plots.py [--data docs/data] [--img docs/img]
                                      [--page docs/benchmarks.md]

Inputs (written by scripts/bench-all.sh; any that is missing is skipped and
its section says so):
  meta.txt       key: value lines (date, machine, load before/after, ...)
  blk.csv        scripts/bench-vhost-user-blk.sh --csv, qd 1 and 32
  blk-sweep.csv  the same with --depths "1 2 4 ... 128" (poll:0)
  net.csv        scripts/bench-vhost-user-net.sh --csv
  ringtest.csv   scripts/bench-ringtest.sh --csv
The page keeps its hand-written text; only what lies between
<!-- BEGIN GENERATED: NAME --> and <!-- END GENERATED: NAME --> is replaced.
Every number in those blocks comes from the CSV files, nothing else.
"""
import argparse
import csv
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")  # no display; files only
import matplotlib.pyplot as plt  # noqa: E402


def read_csv(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return list(csv.DictReader(f))


def num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def fmt(x, spec):
    return spec % x if x is not None else "-"


def ratio(a, b):
    return a / b if a and b else None


def table(header, rows):
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def save(fig, img_dir, name):
    path = os.path.join(img_dir, name)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return name


def img_link(img_dir, page, name, alt):
    rel = os.path.relpath(os.path.join(img_dir, name), os.path.dirname(page))
    return "![%s](%s)" % (alt, rel)


def section_meta(data):
    path = os.path.join(data, "meta.txt")
    if not os.path.exists(path):
        return "(no meta.txt: run scripts/bench-all.sh)"
    lines = [l.rstrip("\n") for l in open(path) if ":" in l]
    out = "\n".join("- **%s**: %s" % tuple(p.strip() for p in l.split(":", 1))
                    for l in lines)
    cpu = next((l.split(":", 1)[1].strip() for l in lines
                if l.startswith("cpu:")), "this machine")
    # Other work sharing the CPUs: the CPU use measured right before the run
    # (nothing of ours running). Older meta files only have the 1-minute
    # load averages, which also count the build and the benchmarks
    # themselves; above 1 they were the only hint.
    other = [float(m.group(1)) for l in lines if l.startswith("other CPU use")
             for m in [re.search(r"([\d.]+)%", l)] if m]
    loads = [float(m.group(1)) for l in lines if l.startswith("load ")
             for m in [re.search(r"load average: ([\d.]+)", l)] if m]
    if other:
        if other[0] > 10:
            out += ("\n\n**Busy machine:** other processes used %.0f%% of the "
                    "CPUs right before this run, on %s. These figures show "
                    "that the tooling works; re-run on a quiet machine before "
                    "comparing them with the targets." % (other[0], cpu))
        else:
            out += ("\n\n**Quiet machine:** other processes used %.0f%% of "
                    "the CPUs right before this run (the load averages above "
                    "include the build and the benchmarks themselves)."
                    % other[0])
    elif loads and max(loads) > 1.0:
        out += ("\n\n**Busy machine:** 1-minute load average up to %.2f around "
                "this run, on %s. These figures show that the tooling works; "
                "re-run on a quiet machine before comparing them with the "
                "targets." % (max(loads), cpu))
    return out


def blk_index(rows):
    """(backing, kind, case) -> row"""
    return {(r["backing"], r["kind"], r["case"]): r for r in rows}


def qsd_case(case):
    return case.replace("packed:1", "packed:0")


def section_blk(rows, img, page):
    if not rows:
        return "(no blk.csv)"
    idx = blk_index(rows)
    kinds = [k for k in ("ours", "ours-p0", "ours-bp", "qsd")
             if any(r["kind"] == k for r in rows)]
    ours_kinds = [k for k in kinds if k != "qsd"]
    cases = sorted({(r["backing"], r["case"]) for r in rows if r["kind"] != "qsd"},
                   key=lambda bc: (bc[0], [int(x) for x in re.findall(r"\d+", bc[1])][::-1]))
    hdr = ["backing", "case"] + ["%s kIOPS" % k for k in kinds]
    hdr += ["%s/qsd" % k for k in ours_kinds]
    hdr += ["%s CPU us/req" % k for k in kinds]
    hdr += ["%s eff vs qsd" % k for k in ours_kinds]
    hdr += ["%s p50/p99 us" % k for k in kinds]
    out = []
    for backing, case in cases:
        get = {k: idx.get((backing, k, qsd_case(case) if k == "qsd" else case))
               for k in kinds}
        iops = {k: num(get[k]["iops"]) if get[k] else None for k in kinds}
        cpu = {k: num(get[k]["backend_ns"]) if get[k] else None for k in kinds}
        r = [backing, case]
        r += [fmt(iops[k] / 1e3 if iops[k] else None, "%.1f") for k in kinds]
        r += [fmt(ratio(iops[k], iops.get("qsd")), "%.2f") for k in ours_kinds]
        r += [fmt(cpu[k] / 1e3 if cpu[k] else None, "%.2f") for k in kinds]
        r += [fmt(ratio(cpu.get("qsd"), cpu[k]), "%.2f") for k in ours_kinds]
        r += ["%s / %s" % (fmt(num(get[k]["p50_us"]), "%.1f"),
                           fmt(num(get[k]["p99_us"]), "%.1f")) if get[k] else "-"
              for k in kinds]
        out.append(r)
    text = table(hdr, out)

    # IOPS per case, one bar per back-end.
    labels = ["%s\n%s" % (b, c.replace("/", "\n")) for b, c in cases]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(8, len(cases) * 0.9), 8))
    w = 0.8 / len(kinds)
    for i, k in enumerate(kinds):
        ys, cs = [], []
        for b, c in cases:
            row = idx.get((b, k, qsd_case(c) if k == "qsd" else c))
            ys.append(num(row["iops"]) / 1e3 if row else 0)
            cs.append(num(row["backend_ns"]) / 1e3 if row and row["backend_ns"] else 0)
        xs = [j + (i - (len(kinds) - 1) / 2) * w for j in range(len(cases))]
        ax1.bar(xs, ys, w, label=k)
        ax2.bar(xs, cs, w, label=k)
    for ax in (ax1, ax2):
        ax.set_xticks(range(len(cases)))
        ax.set_xticklabels(labels, fontsize=7)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    ax1.set_ylabel("kIOPS (higher is better)")
    ax1.set_yscale("log")
    ax1.set_title("vhost-user-blk 4 KiB randread: ours vs qemu-storage-daemon")
    ax2.set_ylabel("back-end CPU us / request (lower is better)")
    ax2.set_yscale("log")
    name = save(fig, img, "blk-cases.png")
    return text + "\n\n" + img_link(img, page, name, "blk IOPS and CPU per case")


def section_sweep(rows, img, page):
    if not rows:
        return "(no blk-sweep.csv)"
    series = {}  # label -> [(qd, row)]
    for r in rows:
        if r["poll"] != "0":
            continue
        label = "%s %s (%s)" % (r["kind"], "packed" if r["packed"] == "1" else "split",
                                r["backing"])
        series.setdefault(label, []).append((int(r["qd"]), r))
    for v in series.values():
        v.sort(key=lambda t: t[0])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for label, pts in sorted(series.items()):
        qds = [q for q, _ in pts]
        axes[0].plot(qds, [num(r["iops"]) / 1e3 for _, r in pts], "o-", label=label)
        axes[1].plot(qds, [num(r["backend_ns"]) / 1e3 if r["backend_ns"] else None
                           for _, r in pts], "o-", label=label)
        axes[2].plot(qds, [num(r["p50_us"]) for _, r in pts], "o-", label=label)
    titles = ["IOPS (k)", "back-end CPU us / request", "p50 latency us"]
    for ax, t in zip(axes, titles):
        ax.set_xscale("log", base=2)
        ax.set_xticks([1, 2, 4, 8, 16, 32, 64, 128])
        ax.set_xticklabels(["1", "2", "4", "8", "16", "32", "64", "128"])
        ax.set_xlabel("queue depth")
        ax.set_title(t)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[1].set_yscale("log")
    name = save(fig, img, "blk-qd.png")
    qds = sorted({int(r["qd"]) for r in rows})
    labels = sorted(series)
    hdr = ["qd"] + ["%s kIOPS" % l for l in labels]
    by = {l: dict(series[l]) for l in labels}
    out = []
    for q in qds:
        out.append([str(q)] + [fmt(num(by[l][q]["iops"]) / 1e3 if q in by[l] else None,
                                   "%.1f") for l in labels])
    return table(hdr, out) + "\n\n" + img_link(img, page, name, "blk queue-depth sweep")


def section_net(rows, img, page):
    if not rows:
        return "(no net.csv: the net benchmark needs root and DPDK's testpmd)"
    hdr = ["mode", "layout", "ours Mpps", "dpdk-vhost Mpps", "ratio (median of rounds)",
           "same-placement ratio (rounds)", "back-end CPU-s / M pkts ours",
           "dpdk-vhost", "front-end with ours", "with dpdk-vhost"]
    out = []
    for r in rows:
        out.append([r["mode"], r["layout"], fmt(num(r["ours_pps"]) / 1e6, "%.2f"),
                    fmt(num(r["dpdk_pps"]) / 1e6, "%.2f"), r["ratio"],
                    "%s (%s)" % (r["same_ratio"], r["same_rounds"]),
                    fmt(num(r["ours_back_ns"]) / 1e3, "%.3f"),
                    fmt(num(r["dpdk_back_ns"]) / 1e3, "%.3f"),
                    fmt(num(r["front_ns_ours"]) / 1e3, "%.3f"),
                    fmt(num(r["front_ns_dpdk"]) / 1e3, "%.3f")])
    fig, ax = plt.subplots(figsize=(8, 4))
    labels = ["%s\n%s" % (r["mode"], r["layout"]) for r in rows]
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [num(r["ours_pps"]) / 1e6 for r in rows], 0.4, label="ours")
    ax.bar([x + 0.2 for x in xs], [num(r["dpdk_pps"]) / 1e6 for r in rows], 0.4,
           label="DPDK vhost PMD")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels)
    ax.set_ylabel("Mpps (64-byte frames)")
    ax.set_title("vhost-user-net, testpmd virtio-user front-end")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    name = save(fig, img, "net.png")
    return table(hdr, out) + "\n\n" + img_link(img, page, name, "net pps")


def section_ringtest(rows, img, page):
    if not rows:
        return "(no ringtest.csv)"
    hdr = ["ours", "model", "ours M/s", "model M/s", "ratio ours/model (median of rounds)",
           "rounds"]
    out = [[r["ours"], r["model"], fmt(num(r["ours_per_s"]) / 1e6, "%.2f"),
            fmt(num(r["model_per_s"]) / 1e6, "%.2f"), r["ratio"], r["rounds"]]
           for r in rows]
    rates = {}
    for r in rows:
        rates[r["ours"]] = num(r["ours_per_s"]) / 1e6
        rates["ringtest " + r["model"]] = num(r["model_per_s"]) / 1e6
    fig, ax = plt.subplots(figsize=(8, 4))
    names = list(rates)
    ax.bar(range(len(names)), [rates[n] for n in names],
           color=["C0" if n.startswith("ours") else "C1" for n in names])
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, fontsize=8)
    ax.set_ylabel("million buffers / s")
    ax.set_title("two CPUs, ring of 256, busy-polling: ours vs Linux ringtest")
    ax.grid(axis="y", alpha=0.3)
    name = save(fig, img, "ringtest.png")
    return table(hdr, out) + "\n\n" + img_link(img, page, name, "ringtest vs ours")


def replace_block(text, name, body):
    begin = "<!-- BEGIN GENERATED: %s -->" % name
    end = "<!-- END GENERATED: %s -->" % name
    pat = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if not pat.search(text):
        print("warning: no %s block in the page" % name, file=sys.stderr)
        return text
    return pat.sub(lambda _: begin + "\n" + body.strip() + "\n" + end, text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="docs/data")
    ap.add_argument("--img", default="docs/img")
    ap.add_argument("--page", default="docs/benchmarks.md")
    a = ap.parse_args()
    os.makedirs(a.img, exist_ok=True)
    d = lambda n: read_csv(os.path.join(a.data, n))  # noqa: E731
    blocks = {
        "meta": section_meta(a.data),
        "blk": section_blk(d("blk.csv"), a.img, a.page),
        "sweep": section_sweep(d("blk-sweep.csv"), a.img, a.page),
        "net": section_net(d("net.csv"), a.img, a.page),
        "ringtest": section_ringtest(d("ringtest.csv"), a.img, a.page),
    }
    text = open(a.page).read()
    for name, body in blocks.items():
        text = replace_block(text, name, body)
    with open(a.page, "w") as f:
        f.write(text)
    print("rewrote", a.page, "and the plots in", a.img)


if __name__ == "__main__":
    main()
