"""The doctor's report: what each check found, the problems (each carrying its own fix), and how both are shown."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from ltms.config import Settings
from ltms.ops.text import table
from ltms.vector_store.faiss_config import ResolvedPaths

OK, INFO, WARN, PROBLEM = "ok", "info", "warn", "problem"


class Stage(IntEnum):
    """When a fix runs within one `--fix`."""

    FIRST = 0  # unreadable rows leave first: the index is then rebuilt without them
    EACH = 1  # file repairs, one problem at a time, in the order found
    LAST = 2  # the index rebuild, once every file it could trip over has been repaired


@dataclass(frozen=True)
class FixContext:
    settings: Settings
    stamp: str  # one timestamp for every file moved aside in a run


@dataclass(frozen=True)
class Fix:
    """A repair. `apply` gets the problems that carry this fix (all of them at once when `together`, else one) and
    says what it did; it never raises for a failed repair, it reports it (Fixed.ok False)."""

    apply: Callable[[FixContext, list[Problem]], list[Fixed]]
    stage: Stage = Stage.EACH
    together: bool = False


@dataclass
class Problem:
    code: str
    message: str
    remedy: str
    fix: Fix | None  # None: a person must act (see remedy)
    path: str | None = None
    blocks_rebuild: bool = False  # the index cannot (or must not) be rebuilt from the database until a person acts

    @property
    def fixable(self) -> bool:
        return self.fix is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "remedy": self.remedy,
            "fixable": self.fixable,
            "path": self.path,
        }


@dataclass
class Check:
    name: str
    status: str
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Fixed:
    code: str
    action: str
    ok: bool = True


CheckResult = tuple[Check, list[Problem]]


@dataclass
class Report:
    settings: list[tuple[str, str, str]]
    checks: list[Check]
    problems: list[Problem]
    fixed: list[Fixed] = field(default_factory=list)
    found: list[Problem] | None = None  # what --fix started from

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "ok": self.ok,
            "settings": [{"name": n, "value": v, "source": s} for n, v, s in self.settings],
            "checks": [{"name": c.name, "status": c.status, "detail": c.detail, **c.data} for c in self.checks],
            "problems": [p.to_json() for p in self.problems],
            "fixed": [{"code": f.code, "action": f.action, "ok": f.ok} for f in self.fixed],
        }
        if self.found is not None:
            result["found"] = [p.to_json() for p in self.found]
        return result


def render(report: Report, paths: ResolvedPaths, where: str | None = None) -> str:
    out = [
        f"ltmc doctor: {where or f'data directory {paths.data_dir}'}",
        "",
        "Configuration",
        table(report.settings, ("SETTING", "VALUE", "SOURCE")),
        "",
        "Checks",
        table([(c.status, c.name, c.detail) for c in report.checks], ("STATUS", "CHECK", "DETAIL")),
    ]
    if report.found is not None:
        out += ["", "Fixed", _render_fixed(report)]
    out.append("")
    if report.ok:
        out.append("Healthy: no problems found.")
        return "\n".join(out)
    out.append(f"Problems ({len(report.problems)})")
    for problem in report.problems:
        out.append(f"  {problem.code}: {problem.message}")
        out.append(f"    {'fix' if problem.fixable else 'to do'}: {problem.remedy}")
    fixable = sum(p.fixable for p in report.problems)
    if fixable and report.found is None:
        out += ["", f"`ltmc doctor --fix` repairs {fixable} of these {len(report.problems)} problems."]
    return "\n".join(out)


def _render_fixed(report: Report) -> str:
    if report.fixed:
        return table([(f.code, ("" if f.ok else "FAILED: ") + f.action) for f in report.fixed])
    return "  nothing that --fix can repair" if report.found else "  nothing to fix"
