"""Static SVG charts for the leaderboard (no JavaScript, no CDN): a latency / accuracy scatter with its
Pareto front, and line charts (training curves, per-value series). Pure Python; labels are escaped."""
from __future__ import annotations

import math
from xml.sax.saxutils import escape

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 640, 380, 64, 24, 20, 48
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"]


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (step * m) <= n:
            step *= m
            break
    start = math.ceil(lo / step) * step
    return [round(start + i * step, 10) for i in range(int((hi - start) / step) + 1)]


def _fmt(v: float) -> str:
    return f"{v:g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.1e}"


class _Axes:
    def __init__(self, xs, ys, log_x=False):
        self.log_x = log_x
        self.int_x = all(float(x).is_integer() for x in xs)  # epochs, step counts: whole-number ticks
        fx = [math.log10(x) for x in xs] if log_x else list(xs)
        self.x0, self.x1 = min(fx), max(fx)
        self.y0, self.y1 = 0.0 if min(ys) >= 0 else min(ys), max(ys)
        if self.x1 == self.x0:
            self.x0, self.x1 = self.x0 - 1, self.x1 + 1
        if self.y1 == self.y0:
            self.y1 = self.y0 + 1
        mx, my = (self.x1 - self.x0) * 0.08, (self.y1 - self.y0) * 0.1
        self.x0, self.x1, self.y1 = self.x0 - mx, self.x1 + mx, self.y1 + my

    def px(self, x):
        v = math.log10(x) if self.log_x else x
        return PAD_L + (v - self.x0) / (self.x1 - self.x0) * (W - PAD_L - PAD_R)

    def py(self, y):
        return H - PAD_B - (y - self.y0) / (self.y1 - self.y0) * (H - PAD_T - PAD_B)

    def frame(self, x_label: str, y_label: str) -> list[str]:
        out = [f'<rect x="{PAD_L}" y="{PAD_T}" width="{W - PAD_L - PAD_R}" height="{H - PAD_T - PAD_B}" '
               'fill="#fff" stroke="#999"/>']
        for t in _ticks(self.y0, self.y1):
            y = self.py(t)
            out.append(f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
                       f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{_fmt(t)}</text>')
        if self.log_x:
            xt = [10 ** e for e in range(math.floor(self.x0), math.ceil(self.x1) + 1)
                  if self.x0 <= e <= self.x1]
        else:
            xt = [t for t in _ticks(self.x0, self.x1) if not self.int_x or float(t).is_integer()]
        for t in xt:
            x = self.px(t)
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{PAD_T}" y2="{H - PAD_B}" stroke="#eee"/>'
                       f'<text x="{x:.1f}" y="{H - PAD_B + 16}" text-anchor="middle" font-size="11">{_fmt(t)}</text>')
        out.append(f'<text x="{(W + PAD_L) / 2:.0f}" y="{H - 10}" text-anchor="middle" font-size="12">'
                   f'{escape(x_label)}</text>')
        out.append(f'<text x="14" y="{(H - PAD_B + PAD_T) / 2:.0f}" text-anchor="middle" font-size="12" '
                   f'transform="rotate(-90 14 {(H - PAD_B + PAD_T) / 2:.0f})">{escape(y_label)}</text>')
        return out


def _svg(body: list[str], title: str) -> str:
    # inline in HTML: no namespace attribute needed (and no URL in the page)
    return (f'<svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" '
            f'role="img" aria-label="{escape(title, {chr(34): "&quot;"})}"><title>{escape(title)}</title>'
            + "".join(body) + "</svg>")


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower x, higher y), by x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


CHAR_W, LABEL_H = 6.0, 11.0  # a 10-px label's width per character and its height (measured: DejaVu Sans ~5.6)


#: where a label may go around its point, nearest first: (dx, dy, anchor) of the text's anchor point
NEAR = ((6, -6, "start"), (6, 12, "start"), (-6, -6, "end"), (-6, 12, "end"), (0, -9, "middle"), (0, 17, "middle"),
        (6, 3, "start"), (-6, 3, "end"))
#: for the short numbers of labels that went to the legend: the same eight directions at growing distances
RINGS = tuple((dx * r, dy + (dy > 0) * 6 * (r - 1) - (dy <= 0) * 6 * (r - 1), a) for r in (1, 2, 3, 4)
              for dx, dy, a in NEAR)


def label_boxes(points_px: list[tuple[float, float]], labels: list[str | None], *, placed: list | None = None,
                candidates=NEAR) -> list[tuple | None]:
    """Where each label goes: (x, y, anchor, box) with box = (x0, y0, x1, y1), the first of ``candidates`` around
    its point whose box lies inside the plot and overlaps no placed label (``placed``: boxes already taken, extended
    here) and no point; None when none fits, or for a None label. Points are placed highest first."""
    placed = [] if placed is None else placed
    dots = [(x - 4, y - 4, x + 4, y + 4) for x, y in points_px]
    out: list[tuple | None] = [None] * len(labels)

    def free(b):
        inside = PAD_L <= b[0] and b[2] <= W - PAD_R and PAD_T <= b[1] and b[3] <= H - PAD_B
        return inside and not any(b[0] < o[2] and o[0] < b[2] and b[1] < o[3] and o[1] < b[3] for o in placed + dots)

    for i in sorted((i for i in range(len(labels)) if labels[i] is not None), key=lambda i: points_px[i][1]):
        x, y = points_px[i]
        w = CHAR_W * len(labels[i])
        for dx, dy, anchor in candidates:
            x0 = x + dx if anchor == "start" else x + dx - w if anchor == "end" else x - w / 2
            box = (x0, y + dy - LABEL_H + 2, x0 + w, y + dy + 2)
            if free(box):
                placed.append(box)
                out[i] = (x + dx, y + dy, anchor, box)
                break
    return out


def pareto_svg(points: list[tuple[str, float, float]], x_label: str, y_label: str, title: str) -> str:
    """Scatter of (label, x = latency, y = accuracy) on a log x axis, the Pareto front joined. Labels never
    overlap each other or a point, nor leave the plot (:func:`label_boxes`); a label that fits nowhere is a
    number at its point and a line of the legend below the chart."""
    pts = [(x, y) for _, x, y in points if x > 0]
    labels = [lab for lab, x, _ in points if x > 0]
    if not pts:
        return ""
    ax = _Axes([x for x, _ in pts], [y for _, y in pts], log_x=True)
    body = ax.frame(x_label, y_label)
    front = pareto_front(pts)
    path = " ".join(f"{ax.px(pts[i][0]):.1f},{ax.py(pts[i][1]):.1f}" for i in front)
    body.append(f'<polyline class="front" points="{path}" fill="none" stroke="#d62728" stroke-dasharray="4 3"/>')
    px = [(ax.px(x), ax.py(y)) for x, y in pts]
    taken: list = []
    where = label_boxes(px, labels, placed=taken)
    # a label that fits nowhere goes to the legend below the chart; its number is placed like a label, farther out
    numbers: list[str | None] = [None] * len(labels)
    for n, i in enumerate(i for i in range(len(labels)) if where[i] is None):
        numbers[i] = str(n + 1)
    number_at = label_boxes(px, numbers, placed=taken, candidates=RINGS)
    legend = []
    for i, ((x, y), lab) in enumerate(zip(pts, labels)):
        on = i in front
        body.append(f'<circle class="point{" front" if on else ""}" cx="{ax.px(x):.1f}" cy="{ax.py(y):.1f}" r="4" '
                    f'fill="{"#d62728" if on else "#1f77b4"}"><title>{escape(lab)}: {x:g}, {y:.4f}</title></circle>')
        if where[i] is not None:
            lx, ly, anchor, _ = where[i]
            body.append(f'<text class="label" x="{lx:.1f}" y="{ly:.1f}" text-anchor="{anchor}" font-size="10">'
                        f'{escape(lab)}</text>')
        else:
            legend.append(lab if number_at[i] is not None else f"{lab} (its point: {x:g}, {y:.4f})")
            if number_at[i] is not None:
                lx, ly, anchor, _ = number_at[i]
                body.append(f'<text class="label-ref" x="{lx:.1f}" y="{ly:.1f}" text-anchor="{anchor}" font-size="9">'
                            f'{len(legend)}</text>')
    svg = _svg(body, title)
    if legend:  # below the chart, in the page (no clipping inside the SVG)
        svg += '<ol class="chart-legend">' + "".join(f"<li>{escape(lab)}</li>" for lab in legend) + "</ol>"
    return svg


def line_svg(series: dict[str, list[tuple[float, float]]], x_label: str, y_label: str, title: str,
             lines: bool = True) -> str:
    """One polyline per named series of (x, y) points, with a legend; ``lines=False``: the points only (points
    that are different configurations, not a curve)."""
    series = {k: v for k, v in series.items() if v}
    if not series:
        return ""
    xs = [x for v in series.values() for x, _ in v]
    ys = [y for v in series.values() for _, y in v]
    ax = _Axes(xs, ys)
    body = ax.frame(x_label, y_label)
    for n, (name, pts) in enumerate(series.items()):
        color = PALETTE[n % len(PALETTE)]
        path = " ".join(f"{ax.px(x):.1f},{ax.py(y):.1f}" for x, y in pts)
        if lines:
            body.append(f'<polyline class="series" points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        body += [f'<circle cx="{ax.px(x):.1f}" cy="{ax.py(y):.1f}" r="{2.5 if lines else 4}" fill="{color}"/>'
                 for x, y in pts]
        body.append(f'<text x="{PAD_L + 8}" y="{PAD_T + 14 + 14 * n}" font-size="11" fill="{color}">{escape(name)}</text>')
    return _svg(body, title)
