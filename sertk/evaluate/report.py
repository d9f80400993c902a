"""Render a comparison (sertk.evaluate.compare) as RESULTS-style Markdown and as one self-contained HTML page.

The HTML report opens offline: CSS is inline, every figure is a base64 PNG in a ``data:`` URI, and there
is no script and no external URL. Tables are plain cell strings, so the Markdown and the HTML show the
same numbers; rows in ``Table.bold`` (the best system) are bold in both. What the marks and tests mean:
docs/statistics.md.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import numpy as np

import sertk
from sertk.evaluate.plots import confusion_figure, learning_curves_figure, png_bytes, recall_bars_figure
from sertk.evaluate.score import SYNTHETIC_BANNER, format_mean_std, format_pct, markdown_table
from sertk.evaluate.stats import PAIRED_METRICS, TESTS

if TYPE_CHECKING:  # compare imports this module to render; the types only are needed here
    from sertk.evaluate.compare import Comparison, System

UNKNOWN_BANNER = (
    "**data provenance unknown** — a results.json below has no 'synthetic' flag: these numbers may come "
    "from sertk's generated corpus rather than IEMOCAP"
)

BANNER_CLASSES = ("synthetic", "unknown")
CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 80em; padding: 0 1em;
       color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { font-size: 1.3em; margin-top: 2em; } h3 { font-size: 1.1em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
caption { text-align: left; font-weight: 600; padding: 0.3em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
td { text-align: right; white-space: nowrap; } td:first-child { text-align: left; }
.scroll { overflow-x: auto; }
th { background: #f3f3f3; }
tr.best td { font-weight: bold; background: #eef6ee; }
.banner { padding: 0.6em 1em; margin: 1em 0; border-radius: 4px; font-weight: 600; }
.banner.synthetic { background: #fde2e2; border: 1px solid #c33; }
.banner.unknown { background: #fff3cd; border: 1px solid #c90; }
.notes li { margin: 0.3em 0; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; }
footer { margin-top: 3em; font-size: 0.8em; color: #777; }
"""


@dataclass
class Table:
    """A table of cell strings; ``bold`` holds the indices of rows shown bold."""

    caption: str
    header: list[str]
    rows: list[list[str]]
    bold: set[int] = field(default_factory=set)


@dataclass
class Image:
    """A PNG to embed, with its alt text."""

    alt: str
    png: bytes


@dataclass
class Section:
    """A heading, paragraphs and images: one system, or one cross-system figure."""

    heading: str
    paragraphs: list[str] = field(default_factory=list)
    images: list[Image] = field(default_factory=list)


def table_markdown(table: Table) -> list[str]:
    """The table's Markdown lines, bold rows with every non-empty cell in ``**``."""
    rows = [
        [f"**{cell}**" if k in table.bold and cell else cell for cell in row]
        for k, row in enumerate(table.rows)
    ]
    return markdown_table(table.header, rows, "r")


def _table_html(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = []
    for k, row in enumerate(table.rows):
        cells = "".join(f"<td>{html.escape(cell)}</td>" for cell in row)
        body.append(f'<tr class="best">{cells}</tr>' if k in table.bold else f"<tr>{cells}</tr>")
    caption = f"<caption>{html.escape(table.caption)}</caption>"
    rows = "\n".join(body)
    # Wide tables scroll inside their box rather than squeezing the numbers onto two lines.
    return f'<div class="scroll"><table>\n{caption}\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table></div>'


def _image_html(image: Image) -> str:
    data = base64.b64encode(image.png).decode("ascii")
    alt = html.escape(image.alt)
    return (
        f'<figure><img alt="{alt}" src="data:image/png;base64,{data}"><figcaption>{alt}</figcaption></figure>'
    )


def render_html(
    title: str,
    banners: list[tuple[str, str]],
    tables: list[Table],
    notes: list[str],
    sections: list[Section],
    footer: str = "",
) -> str:
    """One HTML page: title, banners (kind ``synthetic`` or ``unknown``, text), tables, notes, sections."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head>\n<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{CSS}</style>\n</head>",
        "<body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for kind, text in banners:
        if kind not in BANNER_CLASSES:
            raise ValueError(f"unknown banner kind {kind!r}")
        parts.append(f'<div class="banner {kind}">{html.escape(text)}</div>')
    parts += [_table_html(table) for table in tables]
    if notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    for section in sections:
        parts.append(f"<section>\n<h2>{html.escape(section.heading)}</h2>")
        parts += [f"<p>{html.escape(p)}</p>" for p in section.paragraphs]
        parts += [_image_html(image) for image in section.images]
        parts.append("</section>")
    if footer:
        parts.append(f"<footer>{html.escape(footer)}</footer>")
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def format_p(value: float | None) -> str:
    """A p-value with 3 decimals, ``<0.001`` below that, — when not tested."""
    if value is None:
        return "—"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _pp(value: float) -> str:
    """A difference of fractions in percentage points, signed."""
    return f"{100 * value:+.1f}"


def _with_interval(value: float | None, interval: tuple[float, float] | None) -> str:
    if value is None:
        return "—"
    if interval is None:
        return format_pct(value)
    return f"{format_pct(value)} [{format_pct(interval[0])}, {format_pct(interval[1])}]"


def report_heading(comp: Comparison) -> str:
    provenance = {s.provenance for s in comp.systems}
    if "synthetic" in provenance:
        return f"{comp.title} (SYNTHETIC data)"
    return f"{comp.title} (data provenance unknown)" if "unknown" in provenance else comp.title


def _banners(comp: Comparison) -> list[tuple[str, str]]:
    provenance = {s.provenance for s in comp.systems}
    banners = [("synthetic", SYNTHETIC_BANNER)] if "synthetic" in provenance else []
    return banners + ([("unknown", UNKNOWN_BANNER)] if "unknown" in provenance else [])


def _row_name(comp: Comparison, system: System) -> str:
    """The row label, flagged when the rows do not all share one provenance."""
    if len({s.provenance for s in comp.systems}) > 1 and system.provenance != "real":
        return f"{system.label} ({'synthetic' if system.provenance == 'synthetic' else 'provenance unknown'})"
    return system.label


def summary_table(comp: Comparison) -> Table:
    """One row per system: means over folds, pooled values with intervals, paper, recall, mark."""
    ref = comp.systems[comp.reference].label
    header = [
        "system",
        "folds",
        "UA (%)",
        "WA (%)",
        "pooled UA (%) [95% CI]",
        "pooled WA (%) [95% CI]",
        "paper UA (%)",
        "paper WA (%)",
        *(f"{c} recall (%)" for c in comp.classes),
        f"vs {ref}",
    ]
    rows = []
    for k, (system, versus) in enumerate(zip(comp.systems, comp.versus, strict=True)):
        results = system.results
        paper = {str(key).lower(): v for key, v in (results.get("paper") or {}).items()}
        recall = results["pooled"].get("per_class_recall", {})
        pooled = results["pooled"]
        mark = (
            versus.verdict if versus is not None else ("reference (best)" if k == comp.best else "reference")
        )
        rows.append(
            [
                _row_name(comp, system),
                str(len(system.folds)),
                format_mean_std(results, "ua"),
                format_mean_std(results, "wa"),
                _with_interval(pooled.get("ua"), system.interval.get("ua")),
                _with_interval(pooled.get("wa"), system.interval.get("wa")),
                format_pct(paper.get("ua")),
                format_pct(paper.get("wa")),
                *(format_pct(recall.get(c)) for c in comp.classes),
                mark,
            ]
        )
    return Table("Systems", header, rows, bold={comp.best})


def tests_table(comp: Comparison) -> Table:
    """One row per system against the reference: differences, t, p (Holm) of both tests, pooled ΔUA/ΔWA."""
    ref = comp.systems[comp.reference]
    header = [
        "system",
        "paired folds",
        "ΔUA (pp)",
        "t (UA)",
        "p t-test UA (Holm)",
        "p sign-flip UA (Holm)",
        "ΔWA (pp)",
        "p t-test WA (Holm)",
        "p sign-flip WA (Holm)",
        "pooled ΔUA (pp) [95% CI]",
        "pooled ΔWA (pp) [95% CI]",
    ]
    rows = []
    for system, versus in zip(comp.systems, comp.versus, strict=True):
        if versus is None:
            rows.append([_row_name(comp, system), "reference", *["—"] * (len(header) - 2)])
            continue
        cells = [_row_name(comp, system)]
        if versus.fold_problem is None:
            cells.append(str(versus.tests["ua"].k))
        else:
            # The reason's first words; the notes under the table give it whole.
            cells.append(f"not paired: {versus.fold_problem.split(' (')[0]}")
        for metric in PAIRED_METRICS:
            tested = versus.tests.get(metric)
            if tested is None:
                cells += ["—"] * (4 if metric == "ua" else 3)
                continue
            cells.append(_pp(tested.mean_difference))
            if metric == "ua":
                cells.append(f"{tested.t:.2f}")
            cells.append(f"{format_p(tested.t_pvalue)} ({format_p(versus.holm[(metric, 't')])})")
            cells.append(f"{format_p(tested.flip_pvalue)} ({format_p(versus.holm[(metric, 'sign-flip')])})")
        for metric in PAIRED_METRICS:
            if metric in versus.pooled_difference:
                delta, low, high = versus.pooled_difference[metric]
                cells.append(f"{_pp(delta)} [{_pp(low)}, {_pp(high)}]")
            else:
                cells.append(f"— ({versus.pooled_problem})" if versus.pooled_problem else "—")
        rows.append(cells)
    why = "--baseline" if comp.options.baseline is not None else "the best mean UA"
    return Table(f"Paired tests against {ref.label} ({why})", header, rows)


def notes(comp: Comparison) -> list[str]:
    """What the marks, tests and intervals mean, in the words of docs/statistics.md."""
    ref = comp.systems[comp.reference].label
    options = comp.options
    tested = [v for v in comp.versus if v is not None and v.tests]
    ks = sorted({v.tests["ua"].k for v in tested})
    lines = [
        "UA/WA: mean ± std over folds; pooled: all folds' test utterances scored together; class recall: "
        "pooled; paper: as reported (— where the paper gives none).",
        f"Bold: the best row by mean UA. Column 'vs {ref}': the {TESTS[options.test]} on per-fold UA, "
        f"Holm-corrected over the {len(tested)} row(s) paired with {ref}, at alpha = {options.alpha:g}: "
        "'better'/'worse' when significant, 'n.s.' when not; 'not paired' rows have no fold test.",
        "Fold tests pair folds by name; d_i = row - reference on fold i, k folds. Paired t-test: "
        "t = mean(d) / (sd(d) / sqrt(k)), df = k - 1. Sign-flip test: exact over all 2^k sign flips, "
        "p = #{flips with |sum(±d_i)| >= |sum(d_i)|} / 2^k. p-values are two-sided: raw (Holm-adjusted).",
        "Power: with 5-10 folds these tests detect only large differences, and the sign-flip test cannot "
        "give p below 2/2^k"
        + (f" ({', '.join(f'k = {k}: {2 / 2**k:.4g}' for k in ks)})" if ks else "")
        + ". 'n.s.' is not evidence that two systems are equal. Folds whose training sets overlap make "
        "the t-test optimistic (Nadeau & Bengio 2003).",
    ]
    if len(comp.systems) > 1 and all(v is None or v.verdict == "not paired" for v in comp.versus):
        hint = "" if options.baseline is not None else ": choose a reference with --baseline EXP"
        lines.append(f"No row is on the same folds as {ref}{hint}.")
    if options.n_boot:
        lines.append(
            f"95% CI: percentile bootstrap, B = {options.n_boot} resamples (seed {options.seed}) of each fold's "
            "test utterances with replacement, each fold keeping its size. Pooled ΔUA/ΔWA: the same "
            "resamples applied to the row and the reference (paired bootstrap), only where both scored the "
            "same test utterances; they reflect the test-set sampling, not the variation between training runs."
        )
    else:
        lines.append("No bootstrap intervals (--bootstrap 0).")
    for system, versus in zip(comp.systems, comp.versus, strict=True):
        if versus is not None and versus.fold_problem is not None and versus.verdict == "not paired":
            lines.append(f"{system.label} vs {ref}: {versus.fold_problem}; no paired test over folds.")
    return lines


def render_markdown(comp: Comparison, confusions: str) -> str:
    """The RESULTS-style comparison: both tables and the notes, then the confusion grid PNG."""
    lines = [f"# {report_heading(comp)}", ""]
    for _, text in _banners(comp):
        lines += [text, ""]
    summary, tests = summary_table(comp), tests_table(comp)
    lines += [*table_markdown(summary), ""]
    lines += [f"## {tests.caption}", "", *table_markdown(tests), ""]
    lines += [f"- {line}" for line in notes(comp)]
    lines += ["", f"![pooled confusion matrices]({confusions})", ""]
    return "\n".join(lines)


def _system_section(comp: Comparison, system: System) -> Section:
    """One system: where it comes from, its pooled confusion matrix and its learning curves."""
    results = system.results
    flag = {"synthetic": "SYNTHETIC data", "real": "real data", "unknown": "data provenance unknown"}
    about = (
        f"{system.exp}: system {results.get('system')}, protocol {results.get('protocol')}, arch "
        f"{results.get('arch')}, features {results.get('feat')}; {len(system.folds)} fold(s), "
        f"{results['pooled'].get('n')} test utterances; {flag[system.provenance]}."
    )
    confusion = confusion_figure(
        np.array(results["pooled"]["confusion"]), system.classes, f"{system.label}: pooled confusion"
    )
    curves = learning_curves_figure(system.learning_curves(), f"{system.label}: learning curves")
    return Section(
        _row_name(comp, system),
        [about],
        [
            Image(f"{system.label}: pooled confusion matrix", png_bytes(confusion)),
            Image(f"{system.label}: learning curves (each fold's metrics.csv)", png_bytes(curves)),
        ],
    )


def render_report(comp: Comparison) -> str:
    """The self-contained HTML report: tables, notes, recall bars, per-system confusion and curves."""
    recall_bars = recall_bars_figure(
        [(s.label, _recall(s, comp.classes), _recall_interval(s, comp.classes)) for s in comp.systems],
        comp.classes,
        "pooled per-class recall" + (" (95% bootstrap CI)" if comp.options.n_boot else ""),
    )
    recall = Section(
        "Per-class recall", images=[Image("pooled per-class recall of every system", png_bytes(recall_bars))]
    )
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return render_html(
        report_heading(comp),
        [(kind, text.replace("**", "")) for kind, text in _banners(comp)],
        [summary_table(comp), tests_table(comp)],
        notes(comp),
        [recall, *(_system_section(comp, s) for s in comp.systems)],
        footer=f"sertk {sertk.__version__} compare, generated {generated}; statistics: docs/statistics.md",
    )


def _recall(system: System, classes: list[str]) -> np.ndarray:
    """Pooled recall over the comparison's classes (NaN: a class the system lacks or never saw)."""
    recall = system.results["pooled"].get("per_class_recall", {})
    return np.array([np.nan if recall.get(c) is None else recall[c] for c in classes], dtype=float)


def _recall_interval(system: System, classes: list[str]) -> np.ndarray | None:
    """(2, C) bootstrap recall interval over the comparison's classes, None without a bootstrap."""
    if "recall" not in system.interval:
        return None
    out = np.full((2, len(classes)), np.nan)
    for j, c in enumerate(classes):
        if c in system.classes:
            out[:, j] = system.interval["recall"][:, system.classes.index(c)]
    return out
