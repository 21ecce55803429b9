"""An SVG of a channel over time: what was owed, claimed, and how much credit was left."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from cocoon.ton.units import TON

WIDTH, HEIGHT, PAD = 640, 300, 48
SERIES = (("owed", "#d9822b"), ("claimed", "#2b8a3e"), ("credit_left", "#1c7ed6"))


class Point(Protocol):
    at: float
    owed: int
    claimed: int
    credit_left: int


def svg(samples: Sequence[Point], title: str) -> str:
    if not samples:
        return ""
    t0, t1 = samples[0].at, max(samples[-1].at, samples[0].at + 1)
    top = max(max(getattr(s, name) for s in samples) for name, _ in SERIES) or 1

    def xy(at: float, value: int) -> str:
        x = PAD + (at - t0) / (t1 - t0) * (WIDTH - 2 * PAD)
        y = HEIGHT - PAD - value / top * (HEIGHT - 2 * PAD)
        return f"{x:.1f},{y:.1f}"

    lines = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{PAD}" y="24" font-size="14">{title}</text>',
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" '
        'stroke="#888"/>',
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}" stroke="#888"/>',
        f'<text x="{PAD - 4}" y="{PAD}" text-anchor="end">{top / TON:.3f}</text>',
        f'<text x="{PAD - 4}" y="{HEIGHT - PAD}" text-anchor="end">0 TON</text>',
        f'<text x="{WIDTH - PAD}" y="{HEIGHT - PAD + 16}" text-anchor="end">{t1 - t0:.0f} s</text>',
    ]
    for i, (name, colour) in enumerate(SERIES):
        points = " ".join(xy(s.at, getattr(s, name)) for s in samples)
        lines.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>'
        )
        lines.append(
            f'<text x="{PAD + 10 + i * 110}" y="{PAD - 8}" fill="{colour}">'
            f"{name.replace('_', ' ')}</text>"
        )
    lines.append("</svg>")
    return "\n".join(lines) + "\n"
