"""The `ltmc` command: serve, doctor, reindex, export, import, migrate, stats.

Errors are one clear line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ltms import __version__
from ltms.config import SETTINGS, Settings
from ltms.embeddings import EMBEDDER_CHOICES
from ltms.errors import LTMCError
from ltms.logs import configure_logging
from ltms.ops.progress import is_terminal
from ltms.ops.stats import NAMESPACE_LIMIT

TRANSPORTS = ("stdio", "http", "dual")
STDIO_HINT = (
    "ltmc: serving MCP over stdio, for an agent that starts this command; press Ctrl-D to stop. "
    "For an HTTP server: ltmc serve --transport http"
)


def _setting_help(name: str, what: str | None = None) -> str:
    """Help text for a setting's flag, with its environment variable and default (both from ltms.config)."""
    spec = SETTINGS[name]
    return f"{what or spec.doc} (default: {spec.env} or {spec.shown_default})"


def _shared_options(argument_default: object = None) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False, argument_default=argument_default)
    common.add_argument("--data-dir", help="data directory (default: LTMC_DATA_DIR, else the per-user data dir)")
    common.add_argument("--index-path", help="index file; a bare name is placed inside the data directory")
    common.add_argument("--embedder", choices=EMBEDDER_CHOICES, help=_setting_help("embedder", "embedding model"))
    common.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help=f"log level on stderr (default: {SETTINGS['log_level'].env}, else info for serve and warning for the "
        "other commands)",
    )
    common.add_argument(
        "-v", "--verbose", action="count", help="also log what happens: -v for info, -vv for debug (like --log-level)"
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    # After the subcommand an absent option is SUPPRESSed, so it keeps the value given before the subcommand
    # (`ltmc --data-dir X doctor`) instead of resetting it to None.
    common = _shared_options(argparse.SUPPRESS)
    parser = argparse.ArgumentParser(
        prog="ltmc", description="Long-term memory for LLM agents, over MCP.", parents=[_shared_options()]
    )
    parser.add_argument("--version", action="version", version=f"ltmc {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", parents=[common], help="run the MCP server")
    serve.add_argument(
        "--transport",
        choices=TRANSPORTS,
        help="stdio (an agent starts ltmc as its child process), http, or both at once (dual) "
        "(default: stdio, or http when --host or --port is given)",
    )
    serve.add_argument("--host", help=_setting_help("http_host"))
    serve.add_argument("--port", help=_setting_help("http_port"))
    serve.add_argument("--read-only", action="store_true", default=None, help=_setting_help("read_only"))
    serve.add_argument("--allow-insecure", action="store_true", default=None, help=_setting_help("allow_insecure"))

    doctor = commands.add_parser("doctor", parents=[common], help="check the configuration, database and index")
    doctor.add_argument("--fix", action="store_true", help="repair what was found (never deletes a memory)")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")

    reindex = commands.add_parser("reindex", parents=[common], help="rebuild the index from the database")
    reindex.add_argument("--reembed", action="store_true", help="re-embed every memory with the configured model")

    export = commands.add_parser("export", parents=[common], help="write every memory to a JSON Lines file")
    export.add_argument("file", help="output file ('-' for stdout)")
    export.add_argument("--with-embeddings", action="store_true", help="include each memory's embedding")
    export.add_argument("--force", action="store_true", help="replace FILE if it exists")

    import_ = commands.add_parser("import", parents=[common], help="read memories from a JSON Lines file")
    import_.add_argument("file", help="input file ('-' for stdin)")

    migrate = commands.add_parser(
        "migrate", parents=[common], help="copy every memory, embeddings included, into PostgreSQL (resumable)"
    )
    migrate.add_argument(
        "--to", required=True, metavar="URL", help="the target database, e.g. postgresql://ltmc:PASSWORD@db:5432/ltmc"
    )

    stats = commands.add_parser("stats", parents=[common], help="counts per namespace, index size, snapshot age")
    stats.add_argument("--json", action="store_true", help="machine-readable output")
    stats.add_argument(
        "--all", action="store_true", help=f"list every namespace (default: the {NAMESPACE_LIMIT} largest)"
    )
    return parser


def transport_of(args: argparse.Namespace) -> str:
    """The transport asked for; without --transport, stdio, unless an HTTP option says otherwise."""
    if args.transport is not None:
        return str(args.transport)
    return "http" if args.host is not None or args.port is not None else "stdio"


def settings_from_args(args: argparse.Namespace) -> Settings:
    # Each setting's flag is declared once in ltms.config; its argparse dest is the flag's name.
    flags = {
        name: getattr(args, spec.flag[2:].replace("-", "_"), None)
        for name, spec in SETTINGS.items()
        if spec.flag is not None
    }
    if flags["log_level"] is None and args.verbose:
        flags["log_level"] = "info" if args.verbose == 1 else "debug"
    # The server logs its start and stop; an operator command prints its result and only warnings besides.
    defaults = {} if args.command == "serve" else {"log_level": "WARNING"}
    return Settings.load(data_dir=args.data_dir, index_path=args.index_path, defaults=defaults, **flags)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve" and args.transport == "stdio" and (args.host is not None or args.port is not None):
        parser.error("--host and --port apply to --transport http or dual, not stdio")
    try:
        settings = settings_from_args(args)
        configure_logging(settings.log_level)
        return run_command(args, settings)
    except LTMCError as exc:
        print(f"ltmc: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ltmc: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`ltmc doctor --json | head`): stop quietly, and keep Python's exit-time flush of
        # stdout from raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def run_command(args: argparse.Namespace, settings: Settings) -> int:
    # Imports are local so `ltmc --help` and each command load only what they use.
    if args.command == "serve":
        from ltms.server.runner import serve

        transport = transport_of(args)
        if transport == "stdio" and is_terminal(sys.stdin):
            # A person ran it by hand: the silence that follows is the server waiting for a client.
            print(STDIO_HINT, file=sys.stderr)
        return serve(settings, transport)
    if args.command == "doctor":
        from ltms.ops.doctor import run_doctor

        return run_doctor(settings, fix=args.fix, as_json=args.json)
    if args.command == "reindex":
        from ltms.ops.reindex import run_reindex

        return run_reindex(settings, reembed=args.reembed)
    if args.command == "export":
        from ltms.ops.transfer import run_export

        return run_export(settings, args.file, with_embeddings=args.with_embeddings, force=args.force)
    if args.command == "import":
        from ltms.ops.transfer import run_import

        return run_import(settings, args.file)
    if args.command == "migrate":
        from ltms.ops.migrate import run_migrate

        return run_migrate(settings, args.to)
    if args.command == "stats":
        from ltms.ops.stats import run_stats

        return run_stats(settings, as_json=args.json, everything=args.all)
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
