"""Run every benchmark in one go, so the numbers (and their ratios) come from one run on one machine state.

    PYTHONPATH=. python bench/run_all.py                        # full run, ~20 min (+ ~2 min once to build 1M)
    PYTHONPATH=. python bench/run_all.py --quick                # smoke test, small sizes
    PYTHONPATH=. python bench/run_all.py --update-readme        # also put the tables into bench/README.md

Tables go to stdout (markdown), progress to stderr. Each script also runs on its own with its own flags
(`--help`). Data directories (up to 1M memories, ~3.7 GB) are cached under /tmp/ltmc-bench
(LTMC_BENCH_CACHE to move it); delete that folder to rebuild them.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BEGIN = "<!-- BEGIN LATEST RESULTS (bench/run_all.py --update-readme) -->"
END = "<!-- END LATEST RESULTS -->"

SCRIPTS = ("bench_embed.py", "bench_store.py", "bench_index.py", "bench_mcp.py")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="pass --quick to every script (< a few minutes)")
    parser.add_argument("--only", default="", help="comma list of scripts to run (default: all)")
    parser.add_argument("--out", help="also write the markdown to this file")
    parser.add_argument("--update-readme", action="store_true", help="replace the results section of bench/README.md")
    args = parser.parse_args()

    chosen = [s for s in SCRIPTS if not args.only or s.removesuffix(".py") in args.only or s in args.only]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    command = shlex.join(["python", "bench/run_all.py", *sys.argv[1:]])
    parts = [
        f"# LTMC benchmarks\n\nCommand: `PYTHONPATH=. {command}`  \n"
        f"Started {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; the whole run in one go, so ratios hold.\n"
    ]
    print(parts[0], flush=True)
    started = time.perf_counter()
    for script in chosen:
        cmd = [sys.executable, str(HERE / script)] + (["--quick"] if args.quick else [])
        print(f"== {script}", file=sys.stderr, flush=True)
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        out = proc.stdout
        if proc.returncode:
            out += f"\n**{script} failed with exit status {proc.returncode}** (see stderr)\n"
        out += f"\n_{script}: {time.perf_counter() - t:.0f} s_\n"
        print(out, flush=True)
        parts.append(out)
    tail = f"\nTotal {time.perf_counter() - started:.0f} s.\n"
    print(tail, flush=True)
    parts.append(tail)
    text = "\n".join(parts)
    if args.out:
        Path(args.out).write_text(text)
    if args.update_readme:
        readme = HERE / "README.md"
        current = readme.read_text() if readme.exists() else f"{BEGIN}\n{END}\n"
        if BEGIN not in current or END not in current:
            current += f"\n{BEGIN}\n{END}\n"
        head, rest = current.split(BEGIN, 1)
        _, foot = rest.split(END, 1)
        # demote the headings two levels, under the README's "## Latest results"
        body = "\n".join(("##" + line) if line.startswith("#") else line for line in text.splitlines())
        readme.write_text(f"{head}{BEGIN}\n{body}\n{END}{foot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
