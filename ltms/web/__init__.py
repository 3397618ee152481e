"""The web page: a person's view of the memory, served under /ui by the HTTP transport."""

from ltms.web.app import web_routes

__all__ = ["web_routes"]
