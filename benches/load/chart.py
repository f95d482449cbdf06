#!/usr/bin/env python3
"""Turns one run of benches/load/run.sh into a markdown table and an SVG bar chart.

    python3 benches/load/chart.py --csv benches/load/results.csv --meta META.tsv \
        --md benches/load/results.md --svg benches/load/results.svg

The CSV has one row per scenario (see run.sh); META is `key<TAB>value` lines (machine, hash
floor, skipped peers, the memory check). The chart shows req/s relative to bare hyper with
the same body size, per scenario group, ours beside each peer. Standard library only.
"""

import argparse
import csv
import math
import sys
from xml.sax.saxutils import escape

GROUPS = [
    ("1k_200", "1 KiB, 200", "bare_1k"),
    ("64k_200", "64 KiB, 200", "bare_64k"),
    ("1k_304", "1 KiB, 304 (If-None-Match matches)", "bare_1k"),
    ("64k_304", "64 KiB, 304 (If-None-Match matches)", "bare_64k"),
]

# (impl, hash) -> legend label, colour. Ours in blues, salvo in orange, Fastify in greens.
SERIES = [
    (("ours", "SHA-256"), "ours, SHA-256 (default)", "#1f4e9c"),
    (("ours", "BLAKE3"), "ours, BLAKE3", "#3d7fd9"),
    (("ours", "XXH3-128"), "ours, XXH3-128 (custom hash)", "#8fbdf2"),
    (("ours", "lookup fast path"), "ours, lookup fast path (SHA-256 tags)", "#5b3fa8"),
    (("salvo", "XXH3-128"), "salvo CachingHeaders (XXH3-128)", "#e07b1a"),
    (("Fastify", "sha1 (default)"), "Fastify + @fastify/etag, sha1 (default)", "#8ccf7e"),
    (("Fastify", "sha256"), "Fastify + @fastify/etag, sha256", "#2e8b3e"),
]

# Ours against a peer on equal hash terms: (label, ours (impl, hash), peer (impl, hash)).
PAIRS = [
    ("ours XXH3-128 / salvo CachingHeaders (XXH3-128)", ("ours", "XXH3-128"), ("salvo", "XXH3-128")),
    ("ours SHA-256 / Fastify sha256", ("ours", "SHA-256"), ("Fastify", "sha256")),
    ("ours SHA-256 / Fastify default (sha1)", ("ours", "SHA-256"), ("Fastify", "sha1 (default)")),
    ("ours lookup fast path / salvo CachingHeaders", ("ours", "lookup fast path"), ("salvo", "XXH3-128")),
]


def num(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def load(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in (
            "rps",
            "p50_ms",
            "p99_ms",
            "peak_rss_kib",
            "cpu_us_per_req",
            "machine_us_per_req",
            "machine_busy_pct",
            "other_cpu_pct",
        ):
            row[key] = num(row.get(key))
    return rows


def load_meta(path):
    meta = {"skipped": [], "note": []}
    if not path:
        return meta
    with open(path) as f:
        for line in f:
            key, _, value = line.rstrip("\n").partition("\t")
            if key in ("skipped", "note"):
                meta[key].append(value)
            elif key:
                meta[key] = value
    return meta


class Run:
    def __init__(self, rows):
        self.rows = rows
        self.by_id = {r["id"]: r for r in rows}

    def bares(self, size):
        """req/s of every bare hyper run with this body size ("1k" or "64k")."""
        return [
            r["rps"]
            for r in self.rows
            if r["impl"] == "bare hyper" and r["rps"] and (r["id"] == f"bare_{size}" or r["id"].startswith(f"bare_{size}_"))
        ]

    def base_rps(self, size):
        """The median of the bare runs of this size: what every ratio is taken against."""
        values = sorted(self.bares(size))
        if not values:
            return None
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2

    def size_of(self, row):
        return "1k" if row["group"].startswith("1k") or row["id"].startswith("bare_1k") else "64k"

    def base(self, group):
        return self.base_rps("1k" if group.startswith("1k") else "64k")

    def base_row(self, size):
        """The bare run nearest the median (for its CPU figures)."""
        target = self.base_rps(size)
        rows = [r for r in self.rows if r["impl"] == "bare hyper" and r["rps"] and self.size_of(r) == size]
        return min(rows, key=lambda r: abs(r["rps"] - target)) if rows else None

    def ratio(self, row):
        base = self.base_rps(self.size_of(row))
        return row["rps"] / base if row["rps"] and base else None

    def find(self, group, impl, hash_):
        for row in self.rows:
            if row["group"] == group and row["impl"] == impl and row["hash"] == hash_:
                return row
        return None


def disturbed(row):
    return row is not None and "disturbed" in (row.get("note") or "")


def fmt(value, pattern, missing="—"):
    return missing if value is None else pattern.format(value)


def markdown(run, meta):
    out = []
    out.append("# Load harness: one run")
    out.append("")
    out.append(
        "Every figure below comes from the same run of `benches/load/run.sh`: one server process "
        "per scenario, wrk on 127.0.0.1, the ratio to bare hyper taken with the same body size. "
        "Server CPU is user + system time of the server process over the measured seconds, per "
        "request; machine busy is the share of both cores' time not idle (wrk and the server "
        "share them); other CPU is what neither the server nor wrk used, in % of one core (the "
        "kernel's loopback work, plus anything else running: above 40% a scenario counts as "
        "disturbed and is measured again). Every ratio is taken against the median of the three "
        "bare hyper runs of the same body size (a 304 row too: against the bare 200)."
    )
    out.append("")
    for key, label in (
        ("date", "date"),
        ("commit", "commit"),
        ("command", "command"),
        ("cpu", "CPU"),
        ("cpu_features", "CPU features (sha_ni, avx2, avx512f)"),
        ("versions", "versions"),
        ("peers", "peers"),
    ):
        if key in meta:
            out.append(f"- {label}: `{meta[key].strip()}`" if key == "command" else f"- {label}: {meta[key].strip()}")
    for reason in meta["skipped"]:
        out.append(f"- **skipped** {reason}")
    for note in meta["note"]:
        out.append(f"- **note** {note}")
    out.append("")
    out.append("![req/s relative to bare hyper](results.svg)")
    out.append("")
    out.append(
        "| scenario | server | hash | req/s | p50 ms | p99 ms | peak RSS MB "
        "| server CPU µs/req | machine busy | other CPU | × bare hyper | note |"
    )
    out.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for row in run.rows:
        ratio = run.ratio(row)
        out.append(
            "| {id} | {impl} | {hash} | {rps} | {p50} | {p99} | {rss} | {cpu} | {busy} | {other} | {ratio} | {note} |".format(
                id=row["id"],
                impl=row["impl"],
                hash=row["hash"],
                rps=fmt(row["rps"], "{:,.0f}"),
                p50=fmt(row["p50_ms"], "{:.2f}"),
                p99=fmt(row["p99_ms"], "{:.2f}"),
                rss=fmt(row["peak_rss_kib"] and row["peak_rss_kib"] / 1024, "{:.1f}"),
                cpu=fmt(row["cpu_us_per_req"], "{:.1f}"),
                busy=fmt(row["machine_busy_pct"], "{:.0f}%"),
                other=fmt(row["other_cpu_pct"], "{:.0f}%"),
                ratio=fmt(ratio, "**{:.2f}×**" if row["impl"] == "ours" else "{:.2f}×"),
                note=row.get("note", "") or "",
            )
        )
    out.append("")

    out.append("## Ours against each peer on equal hash terms")
    out.append("")
    out.append("req/s of ours / req/s of the peer, same run (above 1: ours ahead).")
    out.append("")
    out.append("| | " + " | ".join(label for _, label, _ in GROUPS) + " |")
    out.append("|---|" + "---:|" * len(GROUPS))
    for label, ours, peer in PAIRS:
        cells = []
        for group, _, _ in GROUPS:
            a, b = run.find(group, *ours), run.find(group, *peer)
            mark = " †" if disturbed(a) or disturbed(b) else ""
            cells.append(fmt(a and b and a["rps"] and b["rps"] and a["rps"] / b["rps"], "{:.2f}×" + mark))
        if any(c != "—" for c in cells):
            out.append(f"| {label} | " + " | ".join(cells) + " |")
    out.append("")
    if any(disturbed(r) for r in run.rows):
        out.append(
            "† from a scenario that stayed disturbed by other load in every attempt (see its note "
            "above): read that ratio with care."
        )
        out.append("")

    out.append("## Budget (DESIGN.md §7, issue 13)")
    out.append("")

    def check(label, row_id, size, target):
        row, base = run.by_id.get(row_id), run.base_rps(size)
        if not (row and base and row["rps"]):
            return f"- {label}: not measured"
        value = row["rps"] / base
        verdict = "met" if value >= target else "**missed**"
        return f"- {label}: {value:.2f}× (target ≥ {target}×): {verdict}"

    out.append(check("ours XXH3-128 1 KiB 200 / bare 1 KiB 200 (the layer's own cost)", "xxh3_1k", "1k", 0.95))
    out.append(check("lookup-answered 1 KiB 304 / bare 1 KiB 200", "fast_304_1k", "1k", 0.95))
    out.append(check("BLAKE3 64 KiB 304 / bare 64 KiB 200", "blake3_304_64k", "64k", 1.5))
    for size in ("1k", "64k"):
        row, base = run.by_id.get(f"sha256_{size}"), run.base_row(size)
        floor = num(meta.get(f"floor_sha256_{1024 if size == '1k' else 65536}"))
        if row and base and row["rps"] and base["cpu_us_per_req"] and base["machine_us_per_req"] and floor:
            hash_us = floor / 1000
            server, machine = base["cpu_us_per_req"], base["machine_us_per_req"]
            out.append(
                f"- ours SHA-256 {size.replace('k', ' KiB')} 200 / bare: {run.ratio(row):.2f}×; what SHA-256 "
                f"alone ({hash_us:.2f} µs) allows: {server / (server + hash_us):.2f}× if the server's CPU is "
                f"the bottleneck (bare: {server:.1f} µs/req), {machine / (machine + hash_us):.2f}× if the "
                f"machine's is (bare: {machine:.1f} µs/req of server + wrk + kernel on both cores); "
                f"the machine was {base['machine_busy_pct']:.0f}% busy for bare, "
                f"{row['machine_busy_pct']:.0f}% for ours"
            )
    ahead = []
    for label, ours, peer in PAIRS[:2]:
        for group, glabel, _ in GROUPS:
            a, b = run.find(group, *ours), run.find(group, *peer)
            if a and b and a["rps"] and b["rps"]:
                mark = " †" if disturbed(a) or disturbed(b) else ""
                ahead.append((a["rps"] / b["rps"], f"{label}, {glabel}{mark}"))
    if ahead:
        behind = [f"{text} ({value:.2f}×)" for value, text in ahead if value < 1]
        out.append(
            "- ahead of every peer on equal hash terms at every size: "
            + ("met" if not behind else "**missed** for " + "; ".join(behind))
        )
    for size, label in (("1k", "1 KiB"), ("64k", "64 KiB")):
        values = run.bares(size)
        if len(values) > 1:
            median = run.base_rps(size)
            out.append(
                f"- bare hyper {label}, {len(values)} runs spread over the run: "
                + ", ".join(f"{v:,.0f}" for v in values)
                + f" req/s (median {median:,.0f}; spread {min(values) / median:.2f}–{max(values) / median:.2f}× "
                "of it: differences between ratios smaller than this are noise)"
            )
    out.append("")

    out.append("## Server CPU per request against the hash alone")
    out.append("")
    out.append(
        "200s only (a 304 sends no body, so it costs less than the bare 200 it is compared "
        "with). ours − bare hyper, in server CPU µs per request and in machine CPU µs per "
        "request, beside what the hash alone costs (`bench_server --hash-floor`, one core, "
        "nothing else running). What is left is the layer's own work (holding and replaying "
        "the body, the tag, the header) plus measurement noise (CPU time is counted in 10 ms "
        "ticks; compare with the bare hyper spread above)."
    )
    out.append("")
    out.append("| scenario | server: ours − bare (µs/req) | machine: ours − bare (µs/req) | hash alone (µs) | server rest (µs) |")
    out.append("|---|---:|---:|---:|---:|")
    floors = {"SHA-256": "sha256", "BLAKE3": "blake3", "XXH3-128": "xxh3"}
    for row in run.rows:
        if row["impl"] != "ours" or row["cpu_us_per_req"] is None or not row["group"].endswith("_200"):
            continue
        size = 1024 if row["group"].startswith("1k") else 65536
        base = run.base_row("1k" if size == 1024 else "64k")
        if not base or base["cpu_us_per_req"] is None:
            continue
        delta = row["cpu_us_per_req"] - base["cpu_us_per_req"]
        mdelta = None
        if row["machine_us_per_req"] is not None and base["machine_us_per_req"] is not None:
            mdelta = row["machine_us_per_req"] - base["machine_us_per_req"]
        key = floors.get(row["hash"])
        floor = num(meta.get(f"floor_{key}_{size}")) if key else None
        floor_us = floor / 1000 if floor is not None else None
        rest = delta - floor_us if floor_us is not None else None
        out.append(
            f"| {row['id']} | {delta:+.2f} | {fmt(mdelta, '{:+.2f}')} | {fmt(floor_us, '{:.2f}')} "
            f"| {fmt(rest, '{:+.2f}')} |"
        )
    out.append("")
    if "memory" in meta:
        out.append("## Memory while streaming far above max_buffer")
        out.append("")
        out.append(meta["memory"])
        out.append("")
    out.append("Regenerate: `DURATION=5 benches/load/run.sh` (writes results.csv, results.md, results.svg).")
    out.append("")
    return "\n".join(out)


def svg(run, meta):
    width = 1000
    label_w = 300
    left = label_w + 10
    plot_w = 520
    bar_h = 16
    row_h = 22
    group_gap = 14
    head_h = 22
    top = 70

    groups = []
    for group, title, _ in GROUPS:
        rows = []
        for (impl, hash_), label, colour in SERIES:
            row = run.find(group, impl, hash_)
            if row is None:
                continue
            rows.append((label, colour, row, run.ratio(row)))
        if rows:
            groups.append((title, rows))

    present = {label for _, rows in groups for label, _, _, _ in rows}
    legend = [(label, colour) for _, label, colour in SERIES if label in present]
    legend_cols = 2
    legend_h = 20 * math.ceil(len(legend) / legend_cols)
    top += legend_h + 16

    ratios = [r for _, rows in groups for _, _, _, r in rows if r is not None]
    vmax = max([1.0] + ratios)
    vmax = math.ceil(vmax * 1.12 * 2) / 2  # room for the value labels
    step = 0.25 if vmax <= 1.5 else 0.5 if vmax <= 4 else 1.0

    def x(v):
        return left + plot_w * v / vmax

    height = top
    for _, rows in groups:
        height += head_h + row_h * len(rows) + group_gap
    axis_y = height
    height += 70

    e = []
    e.append(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">'
    )
    e.append(f'<rect width="{width}" height="{height}" fill="#ffffff"/>')
    title = "tower-conditional under load: req/s relative to bare hyper, one run"
    e.append(f'<text x="{width / 2}" y="24" text-anchor="middle" font-size="17" font-weight="bold">{escape(title)}</text>')
    parts = []
    if meta.get("command"):
        parts.append("benches/load/run.sh with " + meta["command"].split(" benches")[0])
    if meta.get("cpu"):
        parts.append(meta["cpu"])
    if "cpu_features" in meta:
        parts.append("CPU features: " + (meta["cpu_features"].strip() or "none of sha_ni, avx2, avx512f"))
    if meta.get("date"):
        parts.append(meta["date"])
    sub = " · ".join(parts) or "benches/load/run.sh"
    e.append(f'<text x="{width / 2}" y="44" text-anchor="middle" font-size="11" fill="#555">{escape(sub)}</text>')

    # Legend.
    ly = 62
    for i, (label, colour) in enumerate(legend):
        col, line = i % legend_cols, i // legend_cols
        lx = 60 + col * 460
        yy = ly + line * 20
        e.append(f'<rect x="{lx}" y="{yy}" width="14" height="14" fill="{colour}"/>')
        e.append(f'<text x="{lx + 20}" y="{yy + 11}">{escape(label)}</text>')

    # Grid and the bare-hyper reference line.
    v = 0.0
    while v <= vmax + 1e-9:
        gx = x(v)
        e.append(f'<line x1="{gx:.1f}" y1="{top - 6}" x2="{gx:.1f}" y2="{axis_y}" stroke="#e4e4e4"/>')
        e.append(f'<text x="{gx:.1f}" y="{axis_y + 16}" text-anchor="middle" fill="#333">{v:g}×</text>')
        v += step
    e.append(f'<line x1="{left}" y1="{axis_y}" x2="{left + plot_w}" y2="{axis_y}" stroke="#333"/>')
    rx = x(1.0)
    e.append(f'<line x1="{rx:.1f}" y1="{top - 10}" x2="{rx:.1f}" y2="{axis_y}" stroke="#c0392b" stroke-width="1.5" stroke-dasharray="5,4"/>')
    e.append(f'<text x="{rx + 4:.1f}" y="{top - 12}" fill="#c0392b" font-size="11">bare hyper = 1×</text>')
    e.append(
        f'<text x="{left + plot_w / 2}" y="{axis_y + 38}" text-anchor="middle" font-size="13">'
        "req/s relative to bare hyper with the same body size (a 200), higher is better</text>"
    )
    if meta.get("note"):
        e.append(
            f'<text x="{width - 10}" y="{axis_y + 56}" text-anchor="end" font-size="11" fill="#555">'
            "Notes on this run: see results.md</text>"
        )
    if any(disturbed(r) for _, rows in groups for _, _, r, _ in rows):
        e.append(
            f'<text x="10" y="{axis_y + 56}" font-size="11" fill="#555">† faded bar: that scenario '
            "stayed disturbed by other load on the machine in every attempt (see results.md)</text>"
        )

    y = top
    for title, rows in groups:
        e.append(f'<text x="10" y="{y + 15}" font-weight="bold" font-size="13">{escape(title)}</text>')
        y += head_h
        for label, colour, row, ratio in rows:
            shown = label + (" †" if disturbed(row) else "")
            e.append(f'<text x="{label_w}" y="{y + 12}" text-anchor="end">{escape(shown)}</text>')
            if ratio is None:
                note = row.get("note") or "not measured"
                e.append(f'<text x="{left + 4}" y="{y + 12}" fill="#999" font-style="italic">{escape(note[:90])}</text>')
            else:
                bw = max(1.0, x(ratio) - left)
                faded = ' fill-opacity="0.45" stroke="#555" stroke-dasharray="3,2"' if disturbed(row) else ""
                e.append(f'<rect x="{left}" y="{y}" width="{bw:.1f}" height="{bar_h}" fill="{colour}"{faded}/>')
                text = f"{ratio:.2f}×  ({row['rps'] / 1000:.1f}k req/s)"
                e.append(
                    f'<text x="{left + bw + 5:.1f}" y="{y + 12}" fill="#222" stroke="#ffffff" '
                    f'stroke-width="3" paint-order="stroke">{escape(text)}</text>'
                )
            y += row_h
        y += group_gap
    e.append("</svg>")
    return "\n".join(e) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", required=True)
    parser.add_argument("--meta")
    parser.add_argument("--md")
    parser.add_argument("--svg")
    args = parser.parse_args()
    run = Run(load(args.csv))
    meta = load_meta(args.meta)
    md = markdown(run, meta)
    if args.md:
        with open(args.md, "w") as f:
            f.write(md)
    if args.svg:
        with open(args.svg, "w") as f:
            f.write(svg(run, meta))
    sys.stdout.write(md)


if __name__ == "__main__":
    main()
