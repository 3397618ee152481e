"""PostgreSQL connection strings without their secrets, for logs, /health, doctor and error messages.

Pure Python on purpose: config.py uses it to show LTMC_DATABASE_URL, and psycopg is an optional extra.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

HIDDEN = "***"
_SECRET_KEYS = ("password", "sslpassword")


def redact_url(url: str) -> str:
    """`url` with every password replaced by ***: the user:password@ part of a postgresql:// URL, `password=`
    query parameters, and `password=` words of a key=value connection string."""
    text = url.strip()
    if "://" not in text:
        return "".join(
            f"{key}={HIDDEN if key.lower() in _SECRET_KEYS else raw}" if key is not None else raw
            for key, raw, _ in _keywords(text)
        )
    try:
        parts = urlsplit(text)
    except ValueError:
        return f"(an unparsable database URL of {len(text)} characters, not shown)"
    netloc = parts.netloc
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:{HIDDEN}@{hosts}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, HIDDEN if k.lower() in _SECRET_KEYS else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def secrets_of(url: str) -> list[str]:
    """Every password in `url` (decoded), so that messages from the driver can be scrubbed of them too."""
    text = url.strip()
    if "://" not in text:
        return [value for key, _, value in _keywords(text) if key is not None and key.lower() in _SECRET_KEYS and value]
    try:
        parts = urlsplit(text)
        found = [unquote(parts.password)] if parts.password else []
    except ValueError:
        return []
    found += [v for k, v in parse_qsl(parts.query) if k.lower() in _SECRET_KEYS and v]
    return found


def scrub(message: str, url: str) -> str:
    """`message` with the passwords of `url` (raw or URL-quoted) replaced by ***. Passwords shorter than four
    characters are left: replacing every 'a' in a message would hide the message, not a secret."""
    for secret in secrets_of(url):
        if len(secret) >= 4:
            for form in {secret, quote(secret, safe="")}:
                message = message.replace(form, HIDDEN)
    return message


def _keywords(conninfo: str) -> list[tuple[str | None, str, str]]:
    """A key=value connection string as (key, raw value as written, unquoted value) words, and (None, text, '')
    for the whitespace between them, so that joining the raw parts gives the string back."""
    words: list[tuple[str | None, str, str]] = []
    i, n = 0, len(conninfo)
    while i < n:
        if conninfo[i].isspace():
            j = i
            while j < n and conninfo[j].isspace():
                j += 1
            words.append((None, conninfo[i:j], ""))
            i = j
            continue
        eq = conninfo.find("=", i)
        if eq < 0:
            words.append((None, conninfo[i:], ""))
            break
        key = conninfo[i:eq].strip()
        j = eq + 1
        while j < n and conninfo[j] == " ":
            j += 1
        start, value = j, []
        quoted = j < n and conninfo[j] == "'"
        j += 1 if quoted else 0
        while j < n and (conninfo[j] != "'" if quoted else not conninfo[j].isspace()):
            if conninfo[j] == "\\" and j + 1 < n:
                j += 1
            value.append(conninfo[j])
            j += 1
        j += 1 if quoted and j < n else 0
        words.append((key, conninfo[start:j], "".join(value)))
        i = j
    return words
