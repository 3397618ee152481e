"""`--fix`: run the fix each problem carries. Never deletes: what is replaced is moved aside with a timestamp."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ltms.config import Settings
from ltms.ops.doctor.report import Fix, FixContext, Fixed, Problem, Stage


def apply_fixes(settings: Settings, problems: Sequence[Problem]) -> list[Fixed]:
    """Repair the fixable problems: stage by stage, in the order found within a stage; a fix that repairs its
    problems together runs once for all of them."""
    context = FixContext(settings, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    fixable = sorted((p for p in problems if p.fix is not None), key=lambda p: _fix(p).stage)  # stable
    fixed: list[Fixed] = []
    done: set[Fix] = set()
    for problem in fixable:
        fix = _fix(problem)
        if not fix.together:
            fixed += fix.apply(context, [problem])
        elif fix not in done:
            done.add(fix)
            fixed += fix.apply(context, [p for p in fixable if p.fix == fix])
    return fixed


def _fix(problem: Problem) -> Fix:
    assert problem.fix is not None
    return problem.fix


def each(repair: Callable[[FixContext, Problem, Path], Fixed]) -> Fix:
    """A fix that repairs one problem at its path (a problem without a path is left alone)."""

    def apply(context: FixContext, problems: list[Problem]) -> list[Fixed]:
        return [repair(context, p, Path(p.path)) for p in problems if p.path is not None]

    return Fix(apply, Stage.EACH)


def move_aside(problem: Problem, path: Path, target: Path, *, say_aside: bool) -> Fixed:
    """Rename `path` to a free name at `target` (a `-N` suffix when taken)."""
    target = free_name(target)
    try:
        path.rename(target)
    except OSError as exc:
        return Fixed(problem.code, f"move {path} to {target}: {exc.strerror or exc}", ok=False)
    return Fixed(problem.code, f"moved {path} {'aside ' if say_aside else ''}to {target}")


def free_name(target: Path) -> Path:
    candidate, n = target, 1
    while candidate.exists() or candidate.is_symlink():
        candidate, n = target.with_name(f"{target.name}-{n}"), n + 1
    return candidate
