"""The MCP server: tool definitions (thin wrappers over MemoryService), the HTTP app, and the runners.

Only `runner.serve` is called from outside (by `ltmc serve`); the rest is importable for tests.
"""
