"""LTMC: a long-term memory server for LLM agents, over MCP."""

import os

__version__ = "0.2.0"

# One BLAS/OpenMP thread per request by default. The server answers requests on several threads at once, and on a
# busy 2-core machine two OpenMP threads per search made an exact search over 100k vectors 4x slower (48 vs 10 ms
# p50) and the model's p99 16x worse (520 vs 33 ms); see bench/README.md. This must happen before numpy or faiss
# is first imported, and an explicit setting in the environment always wins.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
