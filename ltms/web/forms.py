"""Reading the page's inputs: bounded URL-encoded form bodies and query parameters, with one-line errors."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request

from ltms.errors import InvalidInput

FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FIELDS = 20  # the largest form (edit) has five


class FormError(InvalidInput):
    """A form post that cannot be read; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def read_form(request: Request, max_bytes: int) -> dict[str, str]:
    """The fields of a URL-encoded form post (the last value of a repeated field wins), read up to `max_bytes`."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != FORM_TYPE:
        raise FormError(415, f"a form post must be sent as {FORM_TYPE}, not {content_type or 'no content type'}")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise FormError(413, f"the form is {declared} bytes; the limit is {max_bytes}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise FormError(413, f"the form is larger than the limit of {max_bytes} bytes")
    try:
        pairs = parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FIELDS, encoding="utf-8", errors="strict"
        )
    except UnicodeDecodeError:
        raise FormError(400, "the form is not valid UTF-8") from None
    except ValueError as exc:  # too many fields
        raise FormError(400, f"the form cannot be read: {exc}") from None
    return dict(pairs)


def optional(value: str | None) -> str | None:
    """A text input's value, or None when it was left empty."""
    if value is None or not value.strip():
        return None
    return value.strip()


def tag_list(value: str | None, separator: str = ",") -> list[str]:
    """Tags typed into one field: split at commas (filters) or line ends (the edit form, where tags may hold commas)."""
    return [tag.strip() for tag in (value or "").split(separator) if tag.strip()]


def whole_number(value: str | None, what: str, default: int, low: int, high: int) -> int:
    if value is None or not value.strip():
        return default
    try:
        number = int(value.strip())
    except ValueError:
        raise InvalidInput(f"{what} must be a whole number, got {value[:40]!r}") from None
    if not low <= number <= high:
        raise InvalidInput(f"{what} must be between {low} and {high}, got {number}")
    return number
