"""Small SVG charts drawn on the server: lines over time and bars. No chart library in the
browser (the console works offline and needs no build); every label is escaped here."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

COLORS = ("#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563")
W, H, LEFT, RIGHT, TOP, BOTTOM = 640, 180, 48, 12, 12, 36


def _fmt(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def line_chart(
    title: str,
    x_labels: Sequence[str],
    series: dict[str, Sequence[float | None]],
    unit: str = "",
) -> Markup:
    """One line per series over the same x positions; None is a gap in the line."""
    values = [v for points in series.values() for v in points if v is not None]
    if not values or not x_labels:
        return Markup('<p class="empty">{}: no data in this period.</p>').format(title)
    top = max(values) or 1.0
    n = len(x_labels)
    inner_w, inner_h = W - LEFT - RIGHT, H - TOP - BOTTOM

    def x(i: int) -> float:
        return LEFT + (inner_w * i / (n - 1) if n > 1 else inner_w / 2)

    def y(v: float) -> float:
        return TOP + inner_h * (1 - v / top)

    parts = [
        f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{escape(title)}">',
        f'<line x1="{LEFT}" y1="{TOP + inner_h}" x2="{W - RIGHT}" y2="{TOP + inner_h}" '
        'class="axis"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + inner_h}" class="axis"/>',
        f'<text x="{LEFT - 4}" y="{TOP + 4}" text-anchor="end">{escape(_fmt(top))}</text>',
        f'<text x="{LEFT - 4}" y="{TOP + inner_h}" text-anchor="end">0</text>',
        f'<text x="{LEFT}" y="{H - 18}">{escape(x_labels[0])}</text>',
        f'<text x="{W - RIGHT}" y="{H - 18}" text-anchor="end">{escape(x_labels[-1])}</text>',
    ]
    legend_x = LEFT
    for index, (name, points) in enumerate(series.items()):
        color = COLORS[index % len(COLORS)]
        runs: list[list[str]] = [[]]
        for i, v in enumerate(points):
            if v is None:
                runs.append([])
            else:
                runs[-1].append(f"{x(i):.1f},{y(v):.1f}")
        for run in runs:
            if len(run) == 1:
                cx, cy = run[0].split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{color}"/>')
            elif run:
                parts.append(
                    f'<polyline fill="none" stroke="{color}" stroke-width="2" '
                    f'points="{" ".join(run)}"/>'
                )
        label = f"{name}{f' ({unit})' if unit and index == 0 else ''}"
        parts.append(
            f'<rect x="{legend_x}" y="{H - 10}" width="10" height="4" fill="{color}"/>'
            f'<text x="{legend_x + 14}" y="{H - 5}">{escape(label)}</text>'
        )
        legend_x += 24 + 7 * len(label)
    parts.append("</svg>")
    return Markup(f"<figure><figcaption>{escape(title)}</figcaption>{''.join(parts)}</figure>")


def bar_chart(title: str, labels: Sequence[str], counts: Sequence[float]) -> Markup:
    """Bars over categories (a histogram's buckets)."""
    if not counts or not any(counts):
        return Markup('<p class="empty">{}: nothing yet.</p>').format(title)
    top = max(counts)
    n = len(counts)
    inner_w, inner_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    width = inner_w / n
    parts = [f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{escape(title)}">']
    for i, (label, count) in enumerate(zip(labels, counts)):
        height = inner_h * count / top
        left = LEFT + i * width
        parts.append(
            f'<rect x="{left + 2:.1f}" y="{TOP + inner_h - height:.1f}" '
            f'width="{width - 4:.1f}" height="{height:.1f}" fill="{COLORS[0]}"/>'
            f'<text x="{left + width / 2:.1f}" y="{H - 18}" text-anchor="middle">'
            f"{escape(label)}</text>"
        )
        if count:
            parts.append(
                f'<text x="{left + width / 2:.1f}" y="{TOP + inner_h - height - 2:.1f}" '
                f'text-anchor="middle">{escape(_fmt(count))}</text>'
            )
    parts.append("</svg>")
    return Markup(f"<figure><figcaption>{escape(title)}</figcaption>{''.join(parts)}</figure>")
