"""Check: the data (and index) directory exists or can be created, is private, writable, readable and has room;
its fix removes group/other permission bits."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
from pathlib import Path

from ltms.fsutil import unwritable_reason
from ltms.ops.doctor.repair import each
from ltms.ops.doctor.report import INFO, OK, PROBLEM, WARN, Check, CheckResult, FixContext, Fixed, Problem
from ltms.ops.text import human_bytes

MIN_FREE_BYTES = 64 * 1024 * 1024


def _chmod_700(_context: FixContext, problem: Problem, path: Path) -> Fixed:
    try:
        before = stat.S_IMODE(path.stat().st_mode)
        path.chmod(0o700)
    except OSError as exc:
        return Fixed(problem.code, f"chmod 700 {path}: {exc.strerror or exc}", ok=False)
    return Fixed(problem.code, f"chmod 700 {path} (was {before:04o})")


MAKE_PRIVATE = each(_chmod_700)


def check_directory(path: Path, what: str, prefix: str) -> CheckResult:
    """`prefix` names the problems: data_dir_permissions, index_dir_not_writable, ..."""
    if not path.exists():
        return _check_missing(path, what, prefix)
    if not path.is_dir():
        message = f"{path} exists but is not a directory"
        problem = Problem(
            f"{prefix}_not_a_directory",
            message,
            "move the file away or configure another directory",
            None,
            str(path),
            blocks_rebuild=True,
        )
        return Check(what, PROBLEM, message, {"path": str(path), "exists": True}), [problem]

    problems: list[Problem] = []
    info = path.stat()
    mode = stat.S_IMODE(info.st_mode)
    me = os.geteuid()
    owner = _user(info.st_uid)
    status = OK
    notes = [f"owner {owner}", f"mode {mode:04o}"]
    if info.st_uid != me:
        status = WARN
        notes.append(f"doctor runs as {_user(me)}: the server must run as the owner")
    if mode & 0o077:
        notes[-1] += " (open to other users)"
        can_fix = me in (0, info.st_uid)
        problems.append(
            Problem(
                f"{prefix}_permissions",
                f"{path} has mode {mode:04o}: other users can read the memories",
                "chmod 700 (ltmc doctor --fix)" if can_fix else f"chmod 700 {path} as {owner}",
                MAKE_PRIVATE if can_fix else None,
                str(path),
            )
        )
    writable, reason = _probe_writable(path)
    notes.append("writable" if writable else f"NOT writable ({reason})")
    problems += _access_problems(path, prefix, writable, reason, me)
    free = shutil.disk_usage(path).free
    notes.append(f"{human_bytes(free)} free")
    if free < MIN_FREE_BYTES:
        problems.append(
            Problem(
                "low_disk_space",
                f"only {human_bytes(free)} free on the file system of {path}",
                f"free space: writes fail below a few MiB (doctor warns below {human_bytes(MIN_FREE_BYTES)})",
                None,
                str(path),
            )
        )
    data = {
        "path": str(path),
        "exists": True,
        "owner": owner,
        "uid": info.st_uid,
        "mode": f"{mode:04o}",
        "writable": writable,
        "free_bytes": free,
    }
    return Check(what, PROBLEM if problems else status, f"{path}: {', '.join(notes)}", data), problems


def _check_missing(path: Path, what: str, prefix: str) -> CheckResult:
    """A directory that does not exist yet: fine when it can be created on first use."""
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        message = f"{path} cannot be created: {ancestor} is not a directory"
        problem = Problem(
            f"{prefix}_not_a_directory", message, "configure another directory", None, str(path), blocks_rebuild=True
        )
        return Check(what, PROBLEM, message), [problem]
    writable, reason = _probe_writable(ancestor)
    if not writable:
        message = f"{path} cannot be created: {ancestor} is not writable ({reason})"
        problem = Problem(
            f"{prefix}_not_writable",
            message,
            "configure a directory this user can write",
            None,
            str(path),
            blocks_rebuild=True,
        )
        return Check(what, PROBLEM, message), [problem]
    return Check(
        what,
        INFO,
        f"{path} does not exist yet: it is created (mode 0700) on first use",
        {"path": str(path), "exists": False},
    ), []


def _access_problems(path: Path, prefix: str, writable: bool, reason: str, me: int) -> list[Problem]:
    problems: list[Problem] = []
    if not writable:
        problems.append(
            Problem(
                f"{prefix}_not_writable",
                f"{path} is not writable: {reason}",
                "make it writable for the user the server runs as, or configure another directory",
                None,
                str(path),
                blocks_rebuild=True,
            )
        )
    if not os.access(path, os.R_OK | os.X_OK):
        problems.append(
            Problem(
                f"{prefix}_not_readable",
                f"{path} cannot be read by {_user(me)}",
                "run as the owner, or fix its permissions",
                None,
                str(path),
            )
        )
    return problems


def _probe_writable(directory: Path) -> tuple[bool, str]:
    """Only a real write tells (root ignores mode bits; immutable directories and read-only mounts refuse root)."""
    reason = unwritable_reason(directory)
    return reason is None, reason or ""


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"
