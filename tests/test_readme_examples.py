"""The README's examples, run as a newcomer would run them: in order, in one environment (the exports of one block
are seen by the next, as in one terminal), with `ltmc` on the PATH as after `source .venv/bin/activate`, a scratch
HOME, and the default model.

Every code block in README.md is preceded by a comment this test reads:
    <!-- example: run -->                a shell or Python block the test runs; it must exit with status 0
    <!-- example: server -->             one command that starts a server; run in the background, waited for
    <!-- example: fragment (why) -->     not runnable as shown (a synopsis, a configuration file, a transcript)
    <!-- example: manual (why) -->       runnable, but not by this test (the test suite itself, a 15-minute bench)
Two things are rewritten before a block runs: the server's port (it listens on port 0 here, so 127.0.0.1:5050 in
the later blocks becomes the port it got) and `npx -y @modelcontextprotocol/inspector@VERSION` (the pinned copy in
tests/inspector/node_modules runs instead of a download).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import REPO, ServerProcess

README = REPO / "README.md"
MARKER = re.compile(r"<!-- example: (run|server|fragment|manual)(?: \((.+)\))? -->")
INSPECTOR_VERSION = json.loads((REPO / "tests" / "inspector" / "package.json").read_text())["dependencies"][
    "@modelcontextprotocol/inspector"
]
INSPECTOR = REPO / "tests" / "inspector" / "node_modules" / ".bin" / "mcp-inspector"
NPX_INSPECTOR = f"npx -y @modelcontextprotocol/inspector@{INSPECTOR_VERSION}"
README_PORT = "127.0.0.1:5050"
SHELLS = ("sh", "bash")


@dataclass
class Block:
    line: int  # of the opening fence, 1-based
    language: str
    kind: str | None
    reason: str | None
    text: str


def readme_blocks(text: str) -> list[Block]:
    lines = text.splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        if not lines[i].startswith("```"):
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        before = [line for line in lines[:i] if line.strip()]
        marker = MARKER.fullmatch(before[-1].strip()) if before else None
        found.append(
            Block(
                line=i + 1,
                language=lines[i][3:].strip(),
                kind=marker.group(1) if marker else None,
                reason=marker.group(2) if marker else None,
                text="\n".join(lines[i + 1 : end]),
            )
        )
        i = end + 1
    return found


BLOCKS = readme_blocks(README.read_text())


def test_every_code_block_says_whether_it_runs() -> None:
    unmarked = [b.line for b in BLOCKS if b.kind is None]
    assert not unmarked, f"README.md code blocks at lines {unmarked} need an <!-- example: ... --> comment before them"
    for block in BLOCKS:
        if block.kind in ("fragment", "manual"):
            assert block.reason, f"README.md line {block.line}: say why it is a {block.kind}, e.g. (a transcript)"
        if block.kind in ("run", "server"):
            assert block.language in (*SHELLS, "python"), f"README.md line {block.line}: cannot run {block.language!r}"
    assert [b for b in BLOCKS if b.kind == "run"], "no runnable examples found"


def test_the_inspector_is_pinned_everywhere_in_the_readme() -> None:
    mentions = re.findall(r"@modelcontextprotocol/inspector\S*", README.read_text())
    assert mentions and all(m.startswith(f"@modelcontextprotocol/inspector@{INSPECTOR_VERSION}") for m in mentions), (
        mentions
    )


def newcomer_env(home: Path) -> dict[str, str]:
    """A shell after `source .venv/bin/activate`: no LTMC_* settings, a scratch HOME (so the default data directory
    is scratch too), and this checkout's code first. The HTTP port is 0: the system picks a free one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LTMC_", "FAISS_")) and k != "XDG_DATA_HOME"}
    venv_bin = Path(sys.executable).parent
    env.update(
        HOME=str(home),
        PATH=os.pathsep.join([str(venv_bin), env.get("PATH", "")]),
        VIRTUAL_ENV=str(venv_bin.parent),
        LTMC_VENV=str(venv_bin.parent),  # what start_server.sh uses: the environment running these tests
        PYTHONPATH=str(REPO),
        LTMC_HTTP_PORT="0",
        npm_config_offline="true",  # never a download from a test
    )
    return env


def rewrite(text: str, port: int | None) -> str:
    if port is not None:
        text = text.replace(README_PORT, f"127.0.0.1:{port}")
    return text.replace(NPX_INSPECTOR, str(INSPECTOR))


def run_block(block: Block, text: str, env: dict[str, str], scratch: Path) -> dict[str, str]:
    """Run one block; return the environment after it (a shell block's exports carry over to the next)."""
    if block.language == "python":
        script = scratch / f"example-{block.line}.py"
        script.write_text(text)
        command = [sys.executable, str(script)]
    else:
        env_file = scratch / f"env-{block.line}"
        command = ["bash", "-euo", "pipefail", "-c", f"{text}\nenv -0 > {env_file}"]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0 and "Traceback" not in result.stderr, (
        f"README.md line {block.line} failed with {result.returncode}:\n{text}\n"
        f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )
    if block.language == "python":
        return env
    after = dict(item.split("=", 1) for item in env_file.read_text().split("\0") if "=" in item)
    return {k: v for k, v in after.items() if k not in ("_", "SHLVL", "PWD", "OLDPWD")}


def test_the_runnable_examples_run(tmp_path: Path) -> None:
    env = newcomer_env(tmp_path / "home")
    (tmp_path / "home").mkdir()
    servers: list[ServerProcess] = []
    port: int | None = None
    not_run: list[int] = []
    try:
        for block in BLOCKS:
            text = rewrite(block.text, port)
            if block.kind == "server":
                command = text.strip()
                assert "\n" not in command, f"README.md line {block.line}: a server block holds one command"
                server = ServerProcess(
                    ["bash", "-c", f"exec {command}"],
                    env,
                    tmp_path / f"server-{block.line}.log",
                    cwd=REPO,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                )
                servers.append(server)
                port = server.port
                server.wait_healthy()
            elif block.kind == "run":
                if NPX_INSPECTOR in block.text and (not INSPECTOR.exists() or shutil.which("node") is None):
                    not_run.append(block.line)  # the Inspector is installed by scripts/setup.sh --dev with npm
                    continue
                env = run_block(block, text, env, tmp_path)
        for server in servers:
            assert server.terminate() == 0, server.log()
            assert "Traceback" not in server.log()
    finally:
        for server in servers:
            server.stop()
    if not_run:
        pytest.skip(f"every other example ran; not run (no MCP Inspector here): README.md lines {not_run}")
