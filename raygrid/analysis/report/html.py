"""The report's HTML pieces: sections, tables, figures, and the page (the template
`raygrid/templates/report.html`, package data). Everything inline: no scripts, no network."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import os
import re
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

MISSING = "—"


@dataclass
class Section:
    """One section of the page: HTML fragments (`add`) under a title, with notes on top."""

    anchor: str
    title: str
    parts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, fragment: str | None) -> None:
        if fragment:
            self.parts.append(fragment)

    def render(self) -> str:
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        notes_html = f'<ul class="notes">{notes}</ul>' if notes else ""
        return (f'<section id="{self.anchor}"><h2>{html.escape(self.title)}</h2>{notes_html}'
                f'{"".join(self.parts)}</section>')


def fmt_value(v: Any, fmt: str | None = None) -> str:
    """One cell's text: NaN/None -> "—"; `fmt` (a format spec like "{:g}") when given."""
    if v is None or v is pd.NA or (isinstance(v, (float, np.floating)) and not np.isfinite(v)):
        return MISSING
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if fmt is not None and isinstance(v, (int, float, np.integer, np.floating)):
        return fmt.format(v)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return f"{v:.2f}" if abs(v) >= 10 else f"{v:.3f}"
    return str(v)


def ci(v: float, lo: float, hi: float) -> str:
    """"+0.400 [-0.200, +0.800]" (the value alone without an interval; "—" without a value)."""
    if v is None or not np.isfinite(v):
        return MISSING
    return f"{v:+.3f} [{lo:+.3f}, {hi:+.3f}]" if np.isfinite(lo) and np.isfinite(hi) else f"{v:+.3f}"


Column = tuple  # (column, header) or (column, header, format spec)


def html_table(df: pd.DataFrame, columns: list[Column] | None = None,
               flag: Callable[[pd.Series, str], bool] | None = None, status_col: str | None = "status") -> str:
    """A DataFrame as an HTML table; NaN -> "—". `flag(row, col)` marks a cell; rows whose status
    is not "ok" are shaded."""
    if df is None or df.empty:
        return '<p class="missing">No rows.</p>'
    columns = [c if len(c) == 3 else (c[0], c[1], None) for c in (columns or [(c, c) for c in df.columns])]
    columns = [c for c in columns if c[0] in df.columns]
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h, _ in columns)
    body = []
    for _, row in df.iterrows():
        shaded = status_col and isinstance(row.get(status_col), str) and row[status_col] != "ok"
        cells = []
        for c, _, spec in columns:
            v = row.get(c)
            text = html.escape(fmt_value(v, spec))
            klass = []
            if text == MISSING:
                klass.append("na")
            elif isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)):
                klass.append("num")
            if flag is not None and flag(row, c):
                klass.append("flag")
                text += "<sup>*</sup>"
            cells.append(f'<td class="{" ".join(klass)}">{text}</td>' if klass else f"<td>{text}</td>")
        cls = ' class="incomplete"' if shaded else ""
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def img_tag(png: bytes | None, alt: str, name: str) -> str:
    if not png:
        return f'<p class="missing">No figure: {html.escape(alt)} (no data).</p>'
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}" data-name="{name}">'
            f"<figcaption>{html.escape(alt)}</figcaption></figure>")


def paragraph(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def items(texts: list[str], ordered: bool = False) -> str:
    tag = "ol" if ordered else "ul"
    return f"<{tag}>" + "".join(f"<li>{html.escape(t)}</li>" for t in texts) + f"</{tag}>"


def template() -> str:
    """The page template: $RAYGRID_REPORT_TEMPLATE if set, else the one shipped in the package."""
    override = os.environ.get("RAYGRID_REPORT_TEMPLATE")
    if override:
        return Path(override).read_text(encoding="utf-8")
    return (resources.files("raygrid") / "templates" / "report.html").read_text(encoding="utf-8")


def page(title: str, subtitle_html: str, sections: list[Section], source: str) -> str:
    toc = "".join(f'<li><a href="#{s.anchor}">{html.escape(s.title)}</a></li>' for s in sections)
    return string.Template(template()).safe_substitute(
        title=html.escape(title), subtitle=subtitle_html, toc=f"<nav><ul>{toc}</ul></nav>",
        body="\n".join(s.render() for s in sections),
        generated=html.escape(f"generated {_dt.datetime.now().isoformat(timespec='seconds')} from {source}"),
    )


def embedded_figures(path: str) -> dict[str, bytes]:
    """The figures an index.html embeds: {data-name: PNG bytes} (for tests and tools)."""
    text = Path(path).read_text(encoding="utf-8")
    pattern = r'<img src="data:image/png;base64,([^"]+)" alt="[^"]*" data-name="([^"]+)"'
    return {m.group(2): base64.b64decode(m.group(1)) for m in re.finditer(pattern, text)}
