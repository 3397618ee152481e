"""LTMC: a long-term memory server for LLM agents, over MCP."""

__version__ = "0.1.0"
