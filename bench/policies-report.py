#!/usr/bin/env python3
"""bench/policies-report.py RESULTS.jsonl OUTDIR (or --line JSON): the tables (table.md) and the p99 plot
(p99.svg) of a bench/policies.sh run. Each figure is the median over repetitions."""
import json
import statistics
import sys
from collections import defaultdict

if sys.argv[1] == "--line":  # one run's summary, for the progress log
    r = json.loads(sys.argv[2])
    print(f"{r['label']:>26}  p50 {r['p50_ms']:8.2f}  p99 {r['p99_ms']:8.2f}  p99.9 {r['p999_ms']:8.2f}"
          f"  errors {r['errors']}  o3 {r['shares'].get('o3', 0):.3f}  move {r['share_move_mean']:.3f}")
    sys.exit(0)
results, outdir = sys.argv[1], sys.argv[2]
runs = defaultdict(list)
scenarios, targets = [], []
for line in open(results):
    r = json.loads(line)
    sc, t, _ = r["label"].split("/")
    runs[(sc, t)].append(r)
    if sc not in scenarios:
        scenarios.append(sc)
    if t not in targets:
        targets.append(t)


def med(sc, t, f):
    v = [f(r) for r in runs[(sc, t)]]
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else None


def reaction(r):
    """Seconds from the mid-run fault (at 5 s) to the end of the first second in
    which o3 had under 5% of the requests."""
    for s, shares in enumerate(r["per_second"]):
        if s >= 5 and shares.get("o3", 0.0) < 0.05:
            return s + 1 - 5
    return None


def fmt(x, d=1):
    return "—" if x is None else f"{x:.{d}f}"


lines = []
lines.append("p99 latency, ms (the degraded origin o3's share of requests in brackets):\n")
lines.append("| target | " + " | ".join(scenarios) + " |")
lines.append("|---|" + "---|" * len(scenarios))
for t in targets:
    cells = []
    for sc in scenarios:
        p99 = med(sc, t, lambda r: r["p99_ms"])
        share = med(sc, t, lambda r: r["shares"].get("o3", 0.0))
        cells.append(f"{fmt(p99)} ({fmt(share, 2)})")
    lines.append(f"| {t} | " + " | ".join(cells) + " |")
lines.append("\np99.9 latency, ms / client errors (sum over repetitions) / mean per-second share movement:\n")
lines.append("| target | " + " | ".join(scenarios) + " |")
lines.append("|---|" + "---|" * len(scenarios))
for t in targets:
    cells = []
    for sc in scenarios:
        p999 = med(sc, t, lambda r: r["p999_ms"])
        errors = sum(r["errors"] for r in runs[(sc, t)])
        move = med(sc, t, lambda r: r["share_move_mean"])
        cells.append(f"{fmt(p999)} / {errors} / {fmt(move, 3)}")
    lines.append(f"| {t} | " + " | ".join(cells) + " |")
if "midrun" in scenarios:
    lines.append("\nMid-run degradation (o3 +20 ms at 5 s): seconds until o3 had under 5% of a second's requests:\n")
    lines.append("| target | seconds |")
    lines.append("|---|---|")
    for t in targets:
        rs = [reaction(r) for r in runs[("midrun", t)]]
        lines.append(f"| {t} | " + ", ".join("never" if x is None else str(x) for x in rs) + " |")
open(f"{outdir}/table.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))

# Grouped bars of p99 per scenario per target, log scale.
import math

W, H, L, B, T = 980, 420, 60, 70, 30
colors = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]
vals = [med(sc, t, lambda r: r["p99_ms"]) for sc in scenarios for t in targets]
vals = [v for v in vals if v]
lo, hi = math.floor(math.log10(min(vals))), math.ceil(math.log10(max(vals)))
hi = max(hi, lo + 1)
y = lambda v: T + (H - T - B) * (1 - (math.log10(v) - lo) / (hi - lo))
gw = (W - L - 20) / len(scenarios)
bw = gw * 0.8 / len(targets)
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{L}" y="18" font-size="14">p99 latency (ms, log scale) per scenario and target; o3 degraded</text>']
for e in range(lo, hi + 1):
    yy = y(10 ** e)
    svg.append(f'<line x1="{L}" x2="{W - 20}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#ddd"/>')
    svg.append(f'<text x="{L - 6}" y="{yy + 4:.1f}" text-anchor="end">{10 ** e:g}</text>')
for i, sc in enumerate(scenarios):
    x0 = L + i * gw + gw * 0.1
    for j, t in enumerate(targets):
        v = med(sc, t, lambda r: r["p99_ms"])
        if not v:
            continue
        yy = y(v)
        svg.append(f'<rect x="{x0 + j * bw:.1f}" y="{yy:.1f}" width="{bw * 0.9:.1f}" height="{H - B - yy:.1f}" '
                   f'fill="{colors[j % len(colors)]}"><title>{sc} {t}: {v:.1f} ms</title></rect>')
    svg.append(f'<text x="{L + i * gw + gw / 2:.1f}" y="{H - B + 16}" text-anchor="middle">{sc}</text>')
for j, t in enumerate(targets):
    x = L + j * 110
    svg.append(f'<rect x="{x}" y="{H - 30}" width="12" height="12" fill="{colors[j % len(colors)]}"/>')
    svg.append(f'<text x="{x + 16}" y="{H - 20}">{t}</text>')
svg.append("</svg>")
open(f"{outdir}/p99.svg", "w").write("\n".join(svg) + "\n")
