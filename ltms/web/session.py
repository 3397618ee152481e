"""Sessions and CSRF tokens for the web page, kept in a signed cookie.

The cookie holds a random session id, whether it is signed in, and its expiry, with an HMAC over the three. The
HMAC key comes from the auth token and a secret drawn at start-up, so the cookie never contains the token, cannot
be forged without both, and stops working when the server restarts or the token changes. Signed-in sessions are
also remembered here until they expire, so signing out ends a session even if its cookie is kept.

Every visitor gets a session (signed out when a token is required), because every form post must carry the CSRF
token derived from it: a page on another site can make a browser post a form, but cannot read this token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

COOKIE_NAME = "ltmc_ui"
SESSION_SECONDS = 12 * 3600
MAX_SIGNED_IN = 1000  # signed-in sessions remembered at once; the oldest go first


@dataclass(frozen=True)
class Session:
    sid: str
    signed_in: bool
    expires: int  # epoch seconds


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _same(given: str, expected: str) -> bool:
    # Bytes: compare_digest refuses str with non-ASCII characters, and a cookie or form field may hold any.
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("ascii"))


class Sessions:
    """Issues, reads and ends sessions. Used from the event loop only, so it needs no lock."""

    def __init__(self, token: str | None, secret: bytes | None = None, clock: Callable[[], float] = time.time) -> None:
        self.token_required = bool(token)
        self._token = (token or "").encode("utf-8")
        self._key = hmac.new(secret or secrets.token_bytes(32), b"ltmc-ui\0" + self._token, hashlib.sha256).digest()
        self._clock = clock
        self._signed_in: dict[str, int] = {}  # sid -> expiry

    def _mac(self, purpose: str, payload: str) -> str:
        return _b64(hmac.new(self._key, f"{purpose}\0{payload}".encode(), hashlib.sha256).digest())

    def new(self, signed_in: bool = False) -> Session:
        session = Session(secrets.token_urlsafe(18), signed_in, int(self._clock()) + SESSION_SECONDS)
        if signed_in:
            self._forget_expired()
            while len(self._signed_in) >= MAX_SIGNED_IN:
                del self._signed_in[min(self._signed_in, key=self._signed_in.__getitem__)]
            self._signed_in[session.sid] = session.expires
        return session

    def read(self, cookie: str | None) -> Session | None:
        """The session a cookie stands for, or None when it is missing, forged, expired or signed out."""
        if not cookie or len(cookie) > 200:
            return None
        parts = cookie.split(".")
        if len(parts) != 4 or parts[1] not in ("0", "1") or not parts[2].isdigit():
            return None
        sid, flag, expires, mac = parts
        if not _same(mac, self._mac("session", f"{sid}.{flag}.{expires}")):
            return None
        if int(expires) <= self._clock():
            return None
        if flag == "1" and self._signed_in.get(sid, 0) <= self._clock():
            return None
        return Session(sid, flag == "1", int(expires))

    def cookie_value(self, session: Session) -> str:
        payload = f"{session.sid}.{int(session.signed_in)}.{session.expires}"
        return f"{payload}.{self._mac('session', payload)}"

    def end(self, session: Session) -> None:
        self._signed_in.pop(session.sid, None)

    def allows(self, session: Session) -> bool:
        """Whether this session may see the memories: always without a token, else once signed in."""
        return session.signed_in or not self.token_required

    def token_matches(self, candidate: str) -> bool:
        if not self.token_required:
            return False
        return hmac.compare_digest(candidate.encode("utf-8", "surrogateescape"), self._token)

    def csrf_token(self, session: Session) -> str:
        return self._mac("csrf", session.sid)

    def csrf_matches(self, session: Session, candidate: str | None) -> bool:
        return bool(candidate) and _same(str(candidate), self.csrf_token(session))

    def _forget_expired(self) -> None:
        now = self._clock()
        for sid in [sid for sid, expires in self._signed_in.items() if expires <= now]:
            del self._signed_in[sid]
