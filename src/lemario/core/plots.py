"""Figures and tables for reports: matplotlib without a display, PNGs written atomically, Markdown + HTML tables."""

from __future__ import annotations

import html
import io
from pathlib import Path

from lemario.core.files import atomic_write_bytes


def figure():
    """matplotlib.pyplot on the file-only Agg backend (imported on first use: it is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: Path) -> None:
    """Write a figure as PNG atomically (its folder created) and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    figure().close(fig)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())


def env_steps_axis(ax, title: str) -> None:
    """An axis whose x is env steps (ticks as 50k / 1.5M), titled, with a light grid."""
    ax.set_xlabel("env steps")
    ax.xaxis.set_major_formatter(lambda v, _: f"{v / 1e6:g}M" if v >= 1e6 else f"{v / 1e3:g}k")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)


def table(header: list[str], rows: list[list]) -> tuple[str, str]:
    """(markdown, html) of one table."""
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    h = "<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in header) + "</tr>"
    h += "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows) + "</table>"
    return "\n".join(md), h
