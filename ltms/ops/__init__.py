"""Operator commands behind `ltmc doctor | reindex | export | import | stats`.

Each module exposes one `run_*` function that the CLI calls with the resolved Settings and that returns the
process exit status. Output for people goes to stdout, progress bars and logs to stderr.
"""
