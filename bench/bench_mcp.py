"""End to end through MCP: store and retrieve latency over stdio and streamable HTTP, cold start, server RSS.

The server is the real thing, `python -m ltms serve --transport stdio|http`, started as a separate process; the
client is the mcp SDK's `Client` (stdio: it spawns the server; HTTP: `Client("http://127.0.0.1:PORT/mcp")`).

- Store / retrieve latency: `store_memory` / `retrieve_memory` tool calls, one at a time, with LTMC_EMBEDDER=hash
  (so the embedding model's cost is mostly excluded: hashing takes ~0.3 ms), at 1k, 10k and 100k memories
  already stored (copies of cached data directories, see common.populate). One extra line with the default
  model (all-MiniLM-L6-v2), where the embedding dominates.
- Cold start: from just before the server process is spawned to (a) the first answered MCP request (the
  protocol handshake: `server/discover` or `initialize`), (b) `tools/list` answered, and, in a second launch,
  (c) the first `retrieve_memory` answered, at 100k and 1M memories, with the hash embedder and the default
  model. Page cache warm (the data was just read); the snapshot is current, so nothing is replayed.
- RSS: VmRSS and VmHWM (peak) of the server process after its first retrieve.

    PYTHONPATH=. python bench/bench_mcp.py                    # store at 1k,10k,100k; cold start at 100k, 1M
    PYTHONPATH=. python bench/bench_mcp.py --quick            # < 1 minute
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from common import (
    CACHE,
    HASH_NAME,
    MINILM_NAME,
    ROOT,
    cached_data_dir,
    emit,
    header,
    human,
    log,
    mib,
    ms,
    p50,
    parse_sizes,
    pct,
    proc_status,
    process_tree_pids,
    scratch_copy,
    secs,
    table,
)

EMBEDDER_LABEL = {"hash": HASH_NAME, "minilm": MINILM_NAME}


def server_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LTMC_", "FAISS_"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return env


def server_args(transport: str, data_dir: Path, embedder: str, port: int | None = None) -> list[str]:
    args = [
        "-m",
        "ltms",
        "serve",
        "--transport",
        transport,
        "--data-dir",
        str(data_dir),
        "--embedder",
        embedder,
        "--log-level",
        "warning",
    ]
    if port is not None:
        args += ["--port", str(port)]
    return args


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(port: int, proc: subprocess.Popen, timeout: float = 600.0, poll: float = 0.01) -> float:
    """Poll GET /health until it answers; returns the perf_counter time it first did."""
    deadline = time.perf_counter() + timeout
    url = f"http://127.0.0.1:{port}/health"
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the HTTP server exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                response.read()
                return time.perf_counter()
        except OSError:
            time.sleep(poll)
    raise RuntimeError(f"no answer from {url} within {timeout} s")


class Server:
    """One ltms server process and an MCP client session to it; timings relative to the spawn."""

    def __init__(self, transport: str, data_dir: Path, embedder: str, extra_env: dict[str, str] | None = None) -> None:
        self.transport, self.data_dir, self.embedder = transport, data_dir, embedder
        self.env = {**server_env(), **(extra_env or {})}
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None
        self.t0 = 0.0
        self.health_at: float | None = None

    async def run(self, body: Callable[[Any, Server], Awaitable[Any]]) -> Any:
        from mcp import Client, StdioServerParameters

        self.t0 = time.perf_counter()
        if self.transport == "stdio":
            params = StdioServerParameters(
                command=sys.executable,
                args=server_args("stdio", self.data_dir, self.embedder),
                env=self.env,
                cwd=str(ROOT),
            )
            async with Client(params, cache=None) as client:
                self.connected_at = time.perf_counter()
                self.pid = self._find_stdio_pid()
                return await body(client, self)
        port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, *server_args("http", self.data_dir, self.embedder, port)],
            env=self.env,
            cwd=str(ROOT),
            stdin=subprocess.DEVNULL,
        )
        self.pid = self.proc.pid
        try:
            self.health_at = await anyio.to_thread.run_sync(wait_http, port, self.proc)
            async with Client(f"http://127.0.0.1:{port}/mcp", cache=None) as client:
                self.connected_at = time.perf_counter()
                return await body(client, self)
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @staticmethod
    def _find_stdio_pid() -> int | None:
        for pid in process_tree_pids(os.getpid())[1:]:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"ltms" in cmdline and b"serve" in cmdline:
                return pid
        return None

    def rss(self) -> dict[str, int]:
        return proc_status(self.pid) if self.pid else {}


def check(result: Any, what: str) -> Any:
    if getattr(result, "is_error", False):
        raise RuntimeError(f"{what} failed: {result.content}")
    return result


# -- store / retrieve latency -------------------------------------------------------------------------------


async def latency_body(client: Any, server: Server, n: int, stores: int, retrieves: int) -> dict:
    for i in range(10):  # warm-up: first calls load the model, fill caches
        check(await client.call_tool("store_memory", {"text": f"warm up {server.transport} {n} {i}"}), "store")
        check(await client.call_tool("retrieve_memory", {"query": f"warm up {i}", "k": 10}), "retrieve")
    store_lat = []
    t_all = time.perf_counter()
    for i in range(stores):
        text = (
            f"mcp store {server.transport} size {n} number {i}: the nightly backup of shard {i % 23} took "
            f"{i % 50} minutes longer than usual"
        )
        t = time.perf_counter()
        check(await client.call_tool("store_memory", {"text": text, "tags": ["bench"]}), "store_memory")
        store_lat.append(time.perf_counter() - t)
    rate = stores / (time.perf_counter() - t_all)
    retrieve_lat = []
    for i in range(retrieves):
        t = time.perf_counter()
        check(
            await client.call_tool("retrieve_memory", {"query": f"backup of shard {i % 23} slow", "k": 10}),
            "retrieve_memory",
        )
        retrieve_lat.append(time.perf_counter() - t)
    return {"store": store_lat, "rate": rate, "retrieve": retrieve_lat}


ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def latency_section(
    sizes: list[int],
    transports: list[str],
    stores: int,
    retrieves: int,
    minilm_size: int | None,
    minilm_stores: int,
    one_thread: bool,
) -> list[list[object]]:
    work = CACHE / "work"
    rows = []
    plan = [(n, "hash", stores, transports, None) for n in sizes]
    if one_thread and sizes:  # the same server with faiss (OpenMP) and BLAS limited to one thread
        plan.append((max(sizes), "hash", stores, ["stdio"], ONE_THREAD))
    if minilm_size:
        plan.append((minilm_size, "minilm", minilm_stores, transports, None))
        if one_thread:
            plan.append((minilm_size, "minilm", minilm_stores, ["stdio"], ONE_THREAD))
    for n, embedder, count, chosen, extra in plan:
        base = cached_data_dir(n, EMBEDDER_LABEL[embedder])
        for transport in chosen:
            data_dir = scratch_copy(base, work / f"mcp-{n}")
            log(f"mcp latency: {transport}, {n} memories, {embedder}, env {extra or 'default'}")
            server = Server(transport, data_dir, embedder, extra)
            r = anyio.run(server.run, lambda c, s, n=n, k=count: latency_body(c, s, n, k, max(10, k // 3)))
            rows.append(
                [
                    human(n),
                    transport,
                    "hash" if embedder == "hash" else "all-MiniLM-L6-v2 (default)",
                    "OMP/OPENBLAS_NUM_THREADS=1" if extra else "default",
                    len(r["store"]),
                    ms(p50(r["store"])),
                    ms(pct(r["store"], 99)),
                    f"{r['rate']:.0f}",
                    ms(p50(r["retrieve"])),
                    ms(pct(r["retrieve"], 99)),
                ]
            )
    return rows


# -- cold start ---------------------------------------------------------------------------------------------


async def cold_list_body(client: Any, server: Server) -> dict:
    t = time.perf_counter()
    tools = await client.list_tools(cache_mode="bypass")
    done = time.perf_counter()
    assert any(tool.name == "retrieve_memory" for tool in tools.tools)
    return {
        "handshake": server.connected_at - server.t0,
        "list": done - server.t0,
        "list_only": done - t,
        "health": (server.health_at - server.t0) if server.health_at else None,
    }


async def cold_retrieve_body(client: Any, server: Server) -> dict:
    result = check(
        await client.call_tool("retrieve_memory", {"query": "which deploy was rolled back", "k": 10}), "retrieve_memory"
    )
    done = time.perf_counter()
    status = server.rss()
    count = (result.structured_content or {}).get("count")
    return {
        "retrieve": done - server.t0,
        "handshake": server.connected_at - server.t0,
        "rss": status.get("VmRSS"),
        "hwm": status.get("VmHWM"),
        "count": count,
    }


def cold_section(sizes: list[int], embedders: list[str], transports: list[str], reps: int) -> tuple[list, list]:
    rows, rss_rows = [], []
    for n in sizes:
        for embedder in embedders:
            data_dir = cached_data_dir(n, EMBEDDER_LABEL[embedder])
            for transport in transports:
                lists, retrieves = [], []
                for rep in range(reps if n < 1_000_000 else max(1, reps // 2 + reps % 2)):
                    log(f"cold start: {n} memories, {embedder}, {transport}, run {rep + 1}")
                    lists.append(anyio.run(Server(transport, data_dir, embedder).run, cold_list_body))
                    retrieves.append(anyio.run(Server(transport, data_dir, embedder).run, cold_retrieve_body))
                med = lambda xs: sorted(xs)[(len(xs) - 1) // 2]  # noqa: E731 (lower median of few runs)
                first_retrieve = med([r["retrieve"] for r in retrieves])
                status = "met" if first_retrieve < 3 else "MISSED"
                goal = status if n == 1_000_000 else "-"
                health = [r["health"] for r in lists if r["health"] is not None]
                rows.append(
                    [
                        human(n),
                        "hash" if embedder == "hash" else "all-MiniLM-L6-v2",
                        transport,
                        len(lists),
                        secs(med(health)) if health else "-",
                        secs(med([r["handshake"] for r in lists])),
                        secs(med([r["list"] for r in lists])),
                        secs(first_retrieve),
                        goal,
                    ]
                )
                rss_rows.append(
                    [
                        human(n),
                        "hash" if embedder == "hash" else "all-MiniLM-L6-v2",
                        transport,
                        mib(max(r["rss"] for r in retrieves)),
                        mib(max(r["hwm"] for r in retrieves)),
                    ]
                )
    return rows, rss_rows


# -- cold start what-ifs (bench-only simulations, no MCP) ------------------------------------------------------

WHATIFS = {
    "asis": "as ltms loads today: imports, then SnapshotStore.load (np.fromfile + SHA-256 + deserialize_index)",
    "proposed": "imports, then faiss.read_index on the file with SHA-256 on a 2nd thread",
    "overlap": "the proposed load started on a thread before `import ltms.server.runner`, joined after",
    "mmap": "imports, then read_index(IO_FLAG_MMAP_IFC) (zero-copy, read-only!), SHA-256 left running in background",
}


def coldstart_probe(data_dir: str, mode: str) -> None:
    """In a fresh process: get from interpreter start to one answered exact search the way `mode` says, print one
    line. The parent times from the spawn to that line. The first search runs with faiss threads = 1."""
    import hashlib
    import json
    import threading

    import faiss
    import numpy as np

    paths_dir = Path(data_dir)
    index_path = paths_dir / "faiss_index"
    manifest = json.loads((paths_dir / "faiss_index.manifest.json").read_text())
    box: dict[str, object] = {}

    def sha(fd: int) -> None:
        h = hashlib.sha256()
        offset = 0
        while chunk := os.pread(fd, 1 << 24, offset):
            h.update(chunk)
            offset += len(chunk)
        box["ok"] = h.hexdigest() == manifest["sha256"]

    def proposed_load() -> None:
        fd = os.open(index_path, os.O_RDONLY)
        hasher = threading.Thread(target=sha, args=(fd,))
        hasher.start()
        box["index"] = faiss.read_index(f"/proc/self/fd/{fd}")
        hasher.join()
        os.close(fd)

    if mode == "overlap":
        loader = threading.Thread(target=proposed_load)
        loader.start()
        import ltms.server.runner

        loader.join()
    else:
        import ltms.server.runner  # noqa: F401

        if mode == "asis":
            from ltms.vector_store.faiss_store import SnapshotStore

            store = SnapshotStore(index_path, paths_dir / "faiss_index.manifest.json", paths_dir / "faiss_index.lock")
            index, _ = store.load(manifest["dimension"], manifest["model"])
            box["index"], box["ok"] = index._index, True
        elif mode == "proposed":
            proposed_load()
        elif mode == "mmap":
            box["index"] = faiss.read_index(str(index_path), faiss.IO_FLAG_MMAP_IFC)
            fd = os.open(index_path, os.O_RDONLY)
            threading.Thread(target=sha, args=(fd,), daemon=True).start()
        else:
            raise SystemExit(f"unknown mode {mode}")
    faiss.omp_set_num_threads(1)
    query = np.random.default_rng(1).standard_normal((1, manifest["dimension"]), dtype=np.float32)
    query /= np.linalg.norm(query)
    box["index"].search(query, 10)  # type: ignore[attr-defined]
    print(json.dumps({"ntotal": box["index"].ntotal, "verified": box.get("ok")}), flush=True)  # type: ignore


def whatif_section(sizes: list[int], reps: int) -> list[list[object]]:
    rows = []
    for n in sizes:
        data_dir = cached_data_dir(n, EMBEDDER_LABEL["hash"])
        times: dict[str, list[float]] = {}
        for rep in range(reps):
            for mode in WHATIFS:
                log(f"cold start what-if: {n} memories, {mode}, run {rep + 1}")
                t0 = time.perf_counter()
                proc = subprocess.Popen(
                    [sys.executable, __file__, "--coldstart-probe", str(data_dir), mode],
                    env=server_env(),
                    cwd=str(ROOT),
                    stdout=subprocess.PIPE,
                    text=True,
                )
                line = proc.stdout.readline() if proc.stdout else ""
                elapsed = time.perf_counter() - t0
                proc.wait()
                if not line.strip():
                    raise RuntimeError(f"cold start probe {mode} at {n} failed (status {proc.returncode})")
                times.setdefault(mode, []).append(elapsed)
        for mode, label in WHATIFS.items():
            ts = sorted(times[mode])
            rows.append([human(n), mode, label, secs(ts[(len(ts) - 1) // 2])])
    return rows


def imports_floor(reps: int) -> float:
    """Process start to `import ltms.server.runner` done (interpreter + mcp + faiss + numpy ...): the part of every
    cold start that does not depend on the data."""
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import ltms.server.runner"], env=server_env(), cwd=str(ROOT), check=True)
        times.append(time.perf_counter() - t)
    return sorted(times)[(len(times) - 1) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000", help="memories stored, for the latency part")
    parser.add_argument("--transports", default="stdio,http")
    parser.add_argument("--stores", type=int, default=300, help="store_memory calls per size and transport")
    parser.add_argument("--minilm-size", default="10000", help="size for the default-model line ('' for none)")
    parser.add_argument("--minilm-stores", type=int, default=100)
    parser.add_argument("--cold-sizes", default="100000,1000000")
    parser.add_argument("--cold-embedders", default="hash,minilm")
    parser.add_argument("--cold-transports", default="stdio,http")
    parser.add_argument("--cold-reps", type=int, default=3, help="launches per setting (1M: about half)")
    parser.add_argument(
        "--no-thread-variant",
        action="store_true",
        help="skip the extra rows with OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 in the server",
    )
    parser.add_argument("--whatif-sizes", default="100000,1000000", help="cold start what-if sizes ('' for none)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--coldstart-probe", nargs=2, metavar=("DATA_DIR", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.coldstart_probe:
        coldstart_probe(*args.coldstart_probe)
        return
    if args.quick:
        args.sizes, args.stores, args.minilm_size, args.minilm_stores = "1000,5000", 60, "1000", 20
        args.cold_sizes, args.cold_reps, args.whatif_sizes = "5000", 1, "5000"
    (CACHE / "work").mkdir(parents=True, exist_ok=True)
    transports = [t.strip() for t in args.transports.split(",") if t.strip()]

    header("End to end through MCP (real server processes)")
    minilm = parse_sizes(args.minilm_size)
    rows = latency_section(
        parse_sizes(args.sizes),
        transports,
        args.stores,
        args.stores // 3,
        minilm[0] if minilm else None,
        args.minilm_stores,
        not args.no_thread_variant,
    )
    emit("### Tool-call latency\n")
    emit(
        table(
            [
                "memories stored",
                "transport",
                "embedder",
                "server threads",
                "stores",
                "store p50 ms",
                "store p99 ms",
                "sustained stores/s",
                "retrieve p50 ms",
                "retrieve p99 ms",
            ],
            rows,
        )
    )
    emit()
    emit(
        "One client, one call at a time, after 10 warm-up calls. `store_memory` with one tag; `retrieve_memory` with "
        "k=10. The hash embedder costs ~0.3 ms a text, so its rows are the server's own cost (MCP + service + SQLite "
        "commit + index); the default model's row includes embedding the text (and, for retrieve, the query). "
        "Server threads: `default` lets faiss (OpenMP) and numpy (OpenBLAS) use every core per call; the other "
        "rows start the server with OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1."
    )
    emit()

    cold_rows, rss_rows = cold_section(
        parse_sizes(args.cold_sizes),
        [e.strip() for e in args.cold_embedders.split(",") if e.strip()],
        [t.strip() for t in args.cold_transports.split(",") if t.strip()],
        args.cold_reps,
    )
    floor = imports_floor(max(3, args.cold_reps))
    emit("### Cold start (process start -> first answers)\n")
    emit(
        table(
            [
                "memories",
                "embedder",
                "transport",
                "launches",
                "GET /health s",
                "first MCP request s",
                "tools/list s",
                "first retrieve s",
                "goal 1M < 3 s",
            ],
            cold_rows,
        )
    )
    emit()
    emit(
        "Seconds from just before the server process is spawned. First MCP request = the protocol handshake "
        "(the client's `server/discover` probe or `initialize`); tools/list is sent right after it. First retrieve "
        "= a separate launch whose first tool call is `retrieve_memory` (k=10), so it includes the handshake, the "
        "index load and, with the default model, loading the weights and embedding the query. HTTP: the client "
        "polls GET /health every 10 ms first. Median of the launches (lower median for an even count). Page cache "
        f"warm. For reference, `python -c 'import ltms.server.runner'` alone takes {floor:.2f} s here (interpreter "
        "start + imports, before any data is touched)."
    )
    emit()
    emit("### Server memory after its first retrieve\n")
    emit(table(["memories", "embedder", "transport", "VmRSS MiB", "VmHWM (peak) MiB"], rss_rows))
    emit()
    whatif = parse_sizes(args.whatif_sizes)
    if whatif:
        rows = whatif_section(whatif, max(2, args.cold_reps))
        emit("### Cold start what-ifs: process start -> first exact search answered (bench-only simulations)\n")
        emit(table(["memories", "mode", "how", "s"], rows))
        emit()
        emit(
            "A fresh `python` process per launch, timed from the spawn to its line on stdout; no MCP and no "
            "SQLite (the real server adds the handshake, opening the database and, with the default model, the "
            "weights: compare `asis` with the table above). The first search uses faiss threads = 1. `mmap`: faiss "
            "aborts the process (assertion `is_owned`) on any add to such an index, so it needs a read-only base "
            "plus an in-memory delta for new vectors. Median of the launches (lower median for an even count)."
        )
        emit()


if __name__ == "__main__":
    main()
