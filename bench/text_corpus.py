"""Real English text for recall measurements, from what every Python install ships: the sentences of the
documentation topics (`pydoc_data`) and the docstrings of standard-library (and numpy) modules, classes and
functions. About 18,600 distinct sentences of 40-300 characters; no download. Embedded once with the default model
(all-MiniLM-L6-v2) and cached under the bench cache."""

from __future__ import annotations

import importlib
import inspect
import re
import time

import numpy as np
from common import CACHE, log

MODULES = [
    "email",
    "json",
    "http.client",
    "logging",
    "asyncio",
    "collections",
    "argparse",
    "unittest",
    "xml.etree.ElementTree",
    "sqlite3",
    "urllib.request",
    "concurrent.futures",
    "multiprocessing",
    "decimal",
    "datetime",
    "pathlib",
    "typing",
    "os",
    "shutil",
    "subprocess",
    "socket",
    "ssl",
    "threading",
    "re",
    "string",
    "textwrap",
    "random",
    "statistics",
    "fractions",
    "itertools",
    "functools",
    "operator",
    "inspect",
    "ast",
    "dis",
    "pickle",
    "csv",
    "configparser",
    "tarfile",
    "zipfile",
    "gzip",
    "hashlib",
    "hmac",
    "secrets",
    "uuid",
    "io",
    "tempfile",
    "glob",
    "fnmatch",
    "calendar",
    "time",
    "locale",
    "gettext",
    "codecs",
    "unicodedata",
    "struct",
    "array",
    "heapq",
    "bisect",
    "weakref",
    "copy",
    "pprint",
    "enum",
    "dataclasses",
    "contextlib",
    "abc",
    "numbers",
    "cmath",
    "math",
    "doctest",
    "pdb",
    "trace",
    "timeit",
    "cProfile",
    "venv",
    "zipimport",
    "pkgutil",
    "importlib",
    "sys",
    "builtins",
    "warnings",
    "traceback",
    "gc",
    "signal",
    "mmap",
    "select",
    "selectors",
    "smtplib",
    "imaplib",
    "ftplib",
    "poplib",
    "mailbox",
    "mimetypes",
    "base64",
    "binascii",
    "quopri",
    "html",
    "html.parser",
    "xml.dom.minidom",
    "webbrowser",
    "wsgiref",
    "urllib.parse",
    "http.server",
    "http.cookies",
    "xmlrpc.client",
    "ipaddress",
    "queue",
    "sched",
    "asyncio.tasks",
    "asyncio.streams",
    "logging.handlers",
    "numpy",
    "numpy.linalg",
    "numpy.random",
    "numpy.fft",
]


def sentences() -> list[str]:
    import pydoc_data.topics

    found: set[str] = set()

    def add(text: str | None) -> None:
        for sentence in re.split(r"(?<=[.!?])\s+", re.sub(r"\s+", " ", text or "")):
            sentence = sentence.strip()
            if 40 <= len(sentence) <= 300 and not sentence.startswith((">>>", "...")):
                found.add(sentence)

    for topic in pydoc_data.topics.topics.values():
        add(topic)
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except Exception:  # not on this install
            continue
        add(module.__doc__)
        for _, member in inspect.getmembers(module):
            add(inspect.getdoc(member))
            if inspect.isclass(member):
                for _, method in inspect.getmembers(member):
                    add(inspect.getdoc(method))
    return sorted(found)


def minilm_corpus() -> tuple[list[str], np.ndarray]:
    """(sentences, their all-MiniLM-L6-v2 vectors), embedded once and cached."""
    texts = sentences()
    path = CACHE / f"minilm-corpus-{len(texts)}.npy"
    if path.exists():
        return texts, np.load(path)
    from ltms.embeddings import make_embedder

    embedder = make_embedder("minilm")
    log(f"embedding {len(texts)} sentences with {embedder.name} (once; cached in {path})")
    t = time.perf_counter()
    parts = []
    for start in range(0, len(texts), 512):
        parts.append(embedder.embed_documents(texts[start : start + 512]))
        log(f"  {start + len(parts[-1])}/{len(texts)} in {time.perf_counter() - t:.0f} s")
    vectors = np.ascontiguousarray(np.vstack(parts), dtype=np.float32)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return texts, vectors


if __name__ == "__main__":
    texts, vectors = minilm_corpus()
    print(len(texts), vectors.shape)
