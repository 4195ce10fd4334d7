#!/usr/bin/env python3
"""Draws bench/compare.py's results as one SVG, by string building (no
font or image library; text is SVG <text> in the viewer's sans-serif):

  - armitage/CppNix per workload, on a log scale with 1.0 marked: a bar
    each for wall time, daemon CPU and peak memory, from 1.0 to the ratio
    (left of the line: armitage lower);
  - the scaling curves, each daemon's medians with min–max whiskers:
    path-info time by closure size (log-log) and queries/s by clients at
    once (log x).

Usage: bench/chart.py RESULTS.json [OUT.svg]   (OUT: RESULTS with .svg)
"""

import json
import math
import sys
from xml.sax.saxutils import escape

WIDTH = 1000
BAR_COLORS = {"wall": "#3b5bdb", "cpu": "#f08c00", "memory": "#2f9e44"}
BAR_NAMES = {"wall": "wall time", "cpu": "daemon CPU", "memory": "peak memory"}
DAEMON_COLORS = {"armitage": "#c2255c", "CppNix": "#495057"}
SMOKE_COLOR = "#e03131"


def text(x, y, s, size=12, anchor="start", weight="normal", color="#212529", extra=""):
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'font-weight="{weight}" fill="{color}"{extra}>{escape(str(s))}</text>')


def line(x1, y1, x2, y2, color="#adb5bd", width=1, dash=None):
    d = f' stroke-dasharray="{dash}"' if dash else ""
    return f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{color}" stroke-width="{width}"{d}/>'


def rect(x, y, w, h, color, extra=""):
    return f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{h:.1f}" fill="{color}"{extra}/>'


def nice_ticks(lo, hi):
    """1-2-5 values from the largest at or below lo to the smallest at or
    above hi."""
    ticks = []
    for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 2):
        for m in (1, 2, 5):
            ticks.append(m * 10.0 ** e)
    below = [t for t in ticks if t <= lo * (1 + 1e-9)]
    above = [t for t in ticks if t >= hi * (1 - 1e-9)]
    first, last = max(below), min(above)
    return [t for t in ticks if first * (1 - 1e-9) <= t <= last * (1 + 1e-9)]


def tick_label(v):
    return f"{v:g}"


def log_scale(lo, hi, a, b):
    """Maps [lo, hi] (log) onto [a, b]."""
    l0, l1 = math.log10(lo), math.log10(hi)
    return lambda v: a + (math.log10(v) - l0) / (l1 - l0) * (b - a)


def human(unit, v):
    """A short value for the curves' labels and axes."""
    if unit == "s":
        return f"{v * 1e3:.3g} ms" if v < 1 else f"{v:.3g} s"
    if unit == "/s":
        return f"{v / 1000:.3g}k" if v >= 1000 else f"{v:.3g}"
    return f"{v:.3g}"


def short_count(n):
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


# --- the ratio panel ----------------------------------------------------------------

def ratio_panel(data, top):
    out = []
    rows = data["rows"]
    bars = []  # (row title, [(kind, ratio or None)], a note under the title)
    for row in rows:
        got = [(m["chart"], m["ratio"]) for m in row["measures"] if m.get("chart")]
        note = ""
        for m in row["measures"]:
            if m["field"] == "attack/quiet":
                note = (f"latency attack/quiet: armitage {m['armitage']['median']:.2f}, "
                        f"CppNix {m['CppNix']['median']:.2f}")
        bars.append((row["title"], got, note))
    ratios = [r for _, got, _ in bars for _, r in got if r]
    lo, hi = min(ratios + [0.5]), max(ratios + [2.0])
    ticks = nice_ticks(lo, hi)
    x0, x1 = 360, WIDTH - 50
    x = log_scale(ticks[0], ticks[-1], x0, x1)
    bar_h, group_h = 7, 30
    y = top
    rounds = data["rounds"]
    out.append(text(20, y, f"armitage / CppNix per workload (median{'s' if rounds > 1 else ''} of {rounds} "
                    f"round{'s' if rounds > 1 else ''}; log scale; left of 1.0: armitage lower)", 15, weight="bold"))
    y += 20
    lx = 20
    for kind in ("wall", "cpu", "memory"):
        out.append(rect(lx, y - 9, 10, 10, BAR_COLORS[kind]))
        out.append(text(lx + 14, y, BAR_NAMES[kind], 12))
        lx += 34 + 7 * len(BAR_NAMES[kind])
    out.append(text(x(1.0) - 8, y, "← armitage lower", 11, anchor="end", color="#495057"))
    out.append(text(x(1.0) + 8, y, "armitage higher →", 11, color="#495057"))
    y += 18
    plot_top = y
    plot_bottom = plot_top + group_h * len(bars)
    # Grid and axis labels, top and bottom.
    for t in ticks:
        out.append(line(x(t), plot_top, x(t), plot_bottom, "#e9ecef"))
        out.append(text(x(t), plot_top - 4, tick_label(t), 10, anchor="middle", color="#495057"))
        out.append(text(x(t), plot_bottom + 13, tick_label(t), 10, anchor="middle", color="#495057"))
    for i, (title, got, note) in enumerate(bars):
        gy = plot_top + i * group_h
        if i % 2:
            out.append(rect(20, gy, x1 - 20, group_h, "#f8f9fa"))
        if note:
            out.append(text(x0 - 10, gy + group_h / 2 - 1, title, 11, anchor="end"))
            out.append(text(x0 - 10, gy + group_h / 2 + 10, note, 9, anchor="end", color="#495057"))
        else:
            out.append(text(x0 - 10, gy + group_h / 2 + 4, title, 11, anchor="end"))
        for j, (kind, r) in enumerate(got):
            by = gy + 4 + j * (bar_h + 1)
            if r is None:
                out.append(text(x(1.0) + 4, by + bar_h - 1, "n/a", 8, color="#868e96"))
                continue
            xa, xb = sorted((x(1.0), x(r)))
            out.append(rect(xa, by, xb - xa, bar_h, BAR_COLORS[kind]))
            if r >= 1:
                out.append(text(xb + 3, by + bar_h - 0.5, f"{r:.2f}", 8, color="#343a40"))
            else:
                out.append(text(xa - 3, by + bar_h - 0.5, f"{r:.2f}", 8, anchor="end", color="#343a40"))
    # The alternating backgrounds hid the grid: draw it again, faintly, over them.
    for t in ticks:
        out.append(line(x(t), plot_top, x(t), plot_bottom, "#dee2e6", 0.6))
    out.append(line(x(1.0), plot_top - 2, x(1.0), plot_bottom + 2, "#000000", 1.5))
    out.append(text(x(1.0), plot_bottom + 26, "1.0 = same as CppNix", 11, anchor="middle", weight="bold"))
    return out, plot_bottom + 40


# --- the curve panels ---------------------------------------------------------------

def curve_panel(c, left, top, width, height):
    out = []
    out.append(text(left, top, c["title"], 13, weight="bold"))
    pl, pr = left + 62, left + width - 14
    pt, pb = top + 34, top + height - 40
    xs = c["x"]
    x = log_scale(min(xs), max(xs), pl + 14, pr - 40) if len(xs) > 1 else (lambda v: (pl + pr) / 2)
    values = [p[label][k] for p in c["points"] for label in ("armitage", "CppNix") for k in ("min", "max", "median")]
    values = [v for v in values if v > 0]
    if c.get("log_y"):
        ticks = nice_ticks(min(values), max(values))
        y = log_scale(ticks[0], ticks[-1], pb, pt)
    else:
        top_v = max(values) * 1.1
        step = nice_ticks(top_v / 5, top_v / 5)[-1]
        ticks = [i * step for i in range(int(top_v / step) + 2)]
        y = (lambda lo, hi: (lambda v: pb + (v - lo) / (hi - lo) * (pt - pb)))(0, ticks[-1])
    out.append(rect(pl, pt, pr - pl, pb - pt, "none", ' stroke="#adb5bd"'))
    for t in ticks:
        out.append(line(pl, y(t), pr, y(t), "#e9ecef"))
        out.append(text(pl - 6, y(t) + 4, human(c["unit"], t) if t else "0", 10, anchor="end", color="#495057"))
    for v in xs:
        out.append(line(x(v), pb, x(v), pb + 4, "#495057"))
        out.append(text(x(v), pb + 16, short_count(v), 10, anchor="middle", color="#495057"))
    out.append(text((pl + pr) / 2, pb + 32, c["x_label"] + (" (log scale)" if len(xs) > 1 else ""), 11,
                    anchor="middle", color="#495057"))
    out.append(text(left + 4, (pt + pb) / 2, c["y_label"] + (" (log)" if c.get("log_y") else ""), 11, anchor="middle",
                    color="#495057", extra=f' transform="rotate(-90 {left + 4:.1f} {(pt + pb) / 2:.1f})"'))
    for k, label in enumerate(("armitage", "CppNix")):
        color = DAEMON_COLORS[label]
        pts = [(x(v), y(p[label]["median"])) for v, p in zip(xs, c["points"])]
        out.append(f'<polyline points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in pts)}" fill="none" '
                   f'stroke="{color}" stroke-width="2"/>')
        for (px, py), p in zip(pts, c["points"]):
            lo, hi = p[label]["min"], p[label]["max"]
            if hi > lo:  # side by side, not on top of each other
                wx = px - 3 if k == 0 else px + 3
                out.append(line(wx, y(lo), wx, y(hi), color, 1.2))
            out.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3.2" fill="{color}"/>')
            other = "CppNix" if label == "armitage" else "armitage"
            above = p[label]["median"] > p[other]["median"] or (p[label]["median"] == p[other]["median"] and k == 0)
            out.append(text(px + 5, py - 7 if above else py + 14, human(c["unit"], p[label]["median"]), 9, color=color))
        ly = pt + 14 + 14 * k
        out.append(line(pl + 10, ly - 4, pl + 26, ly - 4, color, 2))
        out.append(text(pl + 30, ly, label, 11, color=color, weight="bold"))
    return out


# --- the whole picture --------------------------------------------------------------

def svg(data):
    m = data["machine"]
    smoke = data.get("smoke_test")
    body = []
    y = 28
    body.append(text(20, y, f"{data['title']} — {data['date']}", 18, weight="bold"))
    y += 20
    body.append(text(20, y, f"{m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM; Nix {data['nix']} clients for "
                     f"both; armitage {data['armitage']}; other work used about {m['other_cpu_cores']:.2f} "
                     f"of the {m['cores']} cores during the run"
                     + (" (a busy machine: figures are noisy)" if m["other_cpu_cores"] > 0.2 else ""), 11,
                     color="#495057"))
    y += 16
    body.append(text(20, y, f"command: {data['command']}  ({data['rounds']} round{'s' if data['rounds'] > 1 else ''}, "
                     f"A/B alternating; {data['duration_s'] // 60} min {data['duration_s'] % 60} s)", 11,
                     color="#495057"))
    if smoke:
        y += 10
        body.append(rect(20, y, WIDTH - 40, 26, SMOKE_COLOR))
        body.append(text(WIDTH / 2, y + 18, data["note"].upper() if data.get("note") else "SMOKE TEST", 14,
                         anchor="middle", weight="bold", color="#ffffff"))
        y += 26
    y += 30
    panel, y = ratio_panel(data, y)
    body += panel
    curves = list(data.get("curves", {}).values())
    if curves:
        y += 10
        w = (WIDTH - 60) / 2
        h = 300
        for i, c in enumerate(curves):
            body += curve_panel(c, 20 + i * (w + 20), y, w, h)
        y += h
    y += 10
    foot = ("ratio = armitage / CppNix of the medians. wall: the clients' time (for queries under attack: a client's "
            "latency with the hostile connections in); daemon CPU and peak memory:")
    body.append(text(20, y, foot, 10, color="#495057"))
    y += 13
    body.append(text(20, y, "each daemon's cgroup, with every process it forks (CppNix's per-connection processes, "
                     "builders). Whiskers on the curves: min–max over the rounds. Drawn by bench/chart.py.",
                     10, color="#495057"))
    if smoke:
        y += 16
        body.append(text(20, y, data["note"], 11, weight="bold", color=SMOKE_COLOR))
    y += 14
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{y:.0f}" viewBox="0 0 {WIDTH} {y:.0f}" '
            f'font-family="sans-serif">')
    return "\n".join([head, rect(0, 0, WIDTH, y, "#ffffff")] + body + ["</svg>"]) + "\n"


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__.strip().splitlines()[-1])
    src = sys.argv[1]
    dst = sys.argv[2] if len(sys.argv) == 3 else (src[:-5] if src.endswith(".json") else src) + ".svg"
    with open(src) as f:
        data = json.load(f)
    with open(dst, "w") as f:
        f.write(svg(data))


if __name__ == "__main__":
    main()
