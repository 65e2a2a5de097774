"""An audit's result: checks with their evidence, claimed and audited epsilons, figures; and its
two files, ``audit.json`` (for machines) and ``audit.html`` (for a privacy officer).

The verdict is PASS only when every check was made and passed; a check that met something it
could not read is a failure (CONVENTIONS 14), never a skip. A check that the records cannot
support at all (a coordinator's state file holds no site ledgers unless they are given) is
reported as *not made*, with why: never as a pass. Any failure makes the verdict FAIL;
otherwise a check not made makes it INCOMPLETE.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["AuditReport", "Check", "write_report"]


@dataclass
class Check:
    """One check: its name, whether it passed, a one-line evidence and the failing items.
    ``made`` is False for a check the records could not support (``passed`` is then False
    too, and ``evidence`` says why it was not made)."""

    name: str
    passed: bool
    evidence: str
    details: list[str] = field(default_factory=list)
    defect: str = ""  # the defect this check exists to catch, in a few words
    made: bool = True

    @property
    def status(self) -> str:
        return "pass" if self.passed else ("FAIL" if self.made else "not made")


@dataclass
class AuditReport:
    kind: str  # "run", "canaries" or "mia"
    title: str
    subject: str
    checks: list[Check] = field(default_factory=list)
    claimed: dict[str, Any] = field(default_factory=dict)
    measured: dict[str, Any] = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)  # PNG file names beside the report
    notes: list[str] = field(default_factory=list)
    seconds: float | None = None

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed and c.made for c in self.checks)

    @property
    def verdict(self) -> str:
        if self.passed:
            return "PASS"
        return "FAIL" if self.failed() or not self.checks else "INCOMPLETE"

    def failed(self) -> list[Check]:
        """The checks that were made and failed."""
        return [c for c in self.checks if c.made and not c.passed]

    def not_made(self) -> list[Check]:
        """The checks the records could not support."""
        return [c for c in self.checks if not c.made]

    def to_dict(self) -> dict[str, Any]:
        out = {"audit": self.kind, "verdict": self.verdict, "title": self.title,
               "subject": self.subject, "claimed": self.claimed, "measured": self.measured,
               "checks": [asdict(c) for c in self.checks], "figures": self.figures,
               "notes": self.notes, "seconds": self.seconds}
        return _finite(out)


def _finite(value: Any) -> Any:
    """JSON has no infinities: write them as the strings "inf" / "-inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "; ".join(_fmt(v) for v in value) or "—"
    if value is None:
        return "—"
    return str(value)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:980px;
margin:2em auto;padding:0 1em;color:#1d2733;line-height:1.45}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px
solid #d8dee4;padding-bottom:.2em} .verdict{display:inline-block;padding:.25em .8em;
border-radius:4px;font-weight:700;color:#fff} .PASS{background:#1a7f37} .FAIL{background:#cf222e}
.INCOMPLETE{background:#9a6700}
table{border-collapse:collapse;width:100%;font-size:.92em} td,th{border:1px solid #d8dee4;
padding:.35em .55em;text-align:left;vertical-align:top} th{background:#f6f8fa}
td.ok{color:#1a7f37;font-weight:700} td.bad{color:#cf222e;font-weight:700}
td.none{color:#9a6700;font-weight:700}
.sub{color:#57606a} img{max-width:100%;border:1px solid #d8dee4;margin:.5em 0}
details{margin-top:.3em} code{background:#f6f8fa;padding:0 .2em}
"""


def render_html(report: AuditReport) -> str:
    e = html.escape
    rows = []
    for c in report.checks:
        cls, word = (("ok", "pass") if c.passed else ("bad", "FAIL") if c.made
                     else ("none", "not made"))
        more = ""
        if c.details:
            items = "".join(f"<li>{e(d)}</li>" for d in c.details[:50])
            extra = (f"<li>… and {len(c.details) - 50} more (audit.json has all)</li>"
                     if len(c.details) > 50 else "")
            more = (f"<details><summary>{len(c.details)} item(s)</summary><ul>{items}{extra}"
                    "</ul></details>")
        catches = f"<div class='sub'>catches: {e(c.defect)}</div>" if c.defect else ""
        rows.append(f"<tr><td>{e(c.name)}{catches}</td><td class='{cls}'>{word}</td>"
                    f"<td>{e(c.evidence)}{more}</td></tr>")
    claimed = "".join(f"<tr><th>{e(k)}</th><td>{e(_fmt(v))}</td></tr>"
                      for k, v in report.claimed.items())
    measured = "".join(f"<tr><th>{e(k)}</th><td>{e(_fmt(v))}</td></tr>"
                       for k, v in report.measured.items())
    figures = "".join(f"<img src='{e(f)}' alt='{e(f)}'>" for f in report.figures)
    notes = "".join(f"<li>{e(n)}</li>" for n in report.notes)
    failed, missing = report.failed(), report.not_made()
    headline = ("Every check passed." if report.passed else
                (f"{len(failed)} of {len(report.checks)} checks failed: "
                 + "; ".join(c.name for c in failed) + "." if failed else "")
                + (f" {len(missing)} could not be made from these records: "
                   + "; ".join(c.name for c in missing) + "." if missing else ""))
    took = "" if report.seconds is None else f" · took {report.seconds:.1f} s"
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{e(report.title)}</title><style>{_CSS}</style></head><body>
<h1>{e(report.title)}</h1>
<p class="sub">{e(report.subject)}{e(took)}</p>
<p><span class="verdict {report.verdict}">{report.verdict}</span> {e(headline)}</p>
<h2>Claimed privacy</h2><table>{claimed or '<tr><td>none claimed</td></tr>'}</table>
<h2>Audited figures</h2><table>{measured or '<tr><td>none</td></tr>'}</table>
<h2>Checks</h2>
<table><tr><th>check</th><th>result</th><th>evidence</th></tr>{''.join(rows)}</table>
{f'<h2>Figures</h2>{figures}' if figures else ''}
{f'<h2>How to read this</h2><ul>{notes}</ul>' if notes else ''}
</body></html>
"""


def write_report(report: AuditReport, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``audit.json`` and ``audit.html`` into ``out_dir`` (its figures already there)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    js = out / "audit.json"
    js.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    page = out / "audit.html"
    page.write_text(render_html(report))
    return js, page
