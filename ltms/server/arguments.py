"""Strict tool arguments: a closed set of names, strict JSON types, and one line per rejected call.

The SDK builds each tool's argument model from the function's signature with pydantic's defaults: unknown
arguments are dropped silently (`store_memory(tag=...)` stored with no tags) and values are coerced (`k: "5"` was
5, while the strict `id: "1"` was refused). Its validation error reaches the client as pydantic's multi-line dump.
`StrictTool` keeps the SDK's schema and call path but:

- forbids unknown arguments (the published schema says `additionalProperties: false`) and names the valid ones;
- validates strictly: a string is never a number and a number never a string or a boolean. The one allowance is
  the SDK's own: an array or object argument may arrive JSON-encoded in a string (some clients send them so); other
  string arguments are never decoded (the SDK turned `update_memory(text='[1]')` into a list and refused it);
- reports every rejected argument on one line: the argument, what was wrong with the value, and the bound.

It relies on the SDK's `Tool.from_function`, `Tool.run(arguments, context, convert_result)` (which validates with
`fn_metadata.validate_arguments` before calling the function) and `MCPServer(tools=[...])`; `_check_sdk` fails at
import with one line if those change.
"""

from __future__ import annotations

import difflib
import inspect
import json
import types
from collections.abc import Callable
from typing import Any, Self, Union, cast, get_args, get_origin

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase, FuncMetadata
from mcp.types import ToolAnnotations
from pydantic import BaseModel, ConfigDict, ValidationError

MAX_SHOWN_CHARS = 40


def _check_sdk() -> None:
    run = inspect.signature(Tool.run).parameters
    if list(run)[:3] != ["self", "arguments", "context"] or "convert_result" not in run:
        raise ImportError("mcp SDK changed: Tool.run(arguments, context, convert_result) is not there any more")
    if (
        not callable(getattr(FuncMetadata, "validate_arguments", None))
        or "tools" not in inspect.signature(MCPServer).parameters
    ):
        raise ImportError("mcp SDK changed: FuncMetadata.validate_arguments or MCPServer(tools=...) is missing")


_check_sdk()


class _StrictArguments(FuncMetadata):
    def pre_parse_json(self, data: dict[str, Any]) -> dict[str, Any]:
        """Decode a JSON-encoded array or object, only for an argument that takes one."""
        parsed = dict(data)
        for name, value in data.items():
            field = _fields(self.arg_model).get(name)
            if isinstance(value, str) and field is not None and _takes_container(field.annotation):
                try:
                    decoded = json.loads(value)
                except (ValueError, RecursionError):
                    continue
                if isinstance(decoded, list | dict):
                    parsed[name] = decoded
        return parsed


class StrictTool(Tool):
    @classmethod
    def build(cls, fn: Callable[..., Any], title: str, annotations: ToolAnnotations, description: str = "") -> Self:
        """A tool from `fn` with strict arguments. The description is `fn`'s docstring (without its source
        indentation) unless one is given."""
        tool = cls.from_function(
            fn, title=title, description=description or inspect.cleandoc(fn.__doc__ or ""), annotations=annotations
        )
        assert isinstance(tool, cls)
        loose = tool.fn_metadata
        strict = cast(
            type[ArgModelBase],
            type(
                loose.arg_model.__name__,
                (loose.arg_model,),
                {"model_config": ConfigDict(extra="forbid", strict=True), "__module__": __name__},
            ),
        )
        tool.fn_metadata = _StrictArguments(
            arg_model=strict,
            output_schema=loose.output_schema,
            output_model=loose.output_model,
            wrap_output=loose.wrap_output,
        )
        tool.parameters = strict.model_json_schema(by_alias=True)
        return tool

    async def run(self, arguments: dict[str, Any], context: Any, convert_result: bool = False) -> Any:
        try:
            self.fn_metadata.validate_arguments(arguments)
        except ValidationError as exc:  # the SDK would send pydantic's dump: say it in one line instead
            raise ToolError(
                f"Error executing tool {self.name}: {describe(exc, list(_fields(self.fn_metadata.arg_model)))}"
            ) from exc
        return await super().run(arguments, context, convert_result)


class RefusingTool(StrictTool):
    """A tool that is listed (with its schema) but refuses every call with `refusal`, whatever the arguments."""

    refusal: str = ""

    async def run(self, arguments: dict[str, Any], context: Any, convert_result: bool = False) -> Any:
        raise ToolError(f"Error executing tool {self.name}: {self.refusal}")


def describe(exc: ValidationError, valid: list[str]) -> str:
    """One line for all that was wrong with a call's arguments."""
    unknown: list[str] = []
    problems: dict[str, str] = {}  # first problem per argument
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        name = loc[0] if loc else "arguments"
        if error["type"] == "extra_forbidden":
            unknown.append(name)
        elif name not in problems:
            problems[name] = _problem(name, loc, error)
    lines = list(problems.values())
    if unknown:
        hints = [
            f"{u!r} (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(u, valid, 1)) else repr(u)
            for u in unknown
        ]
        noun = "argument" if len(unknown) == 1 else "arguments"
        known = f"the valid arguments are {', '.join(valid)}" if valid else "this tool takes no arguments"
        lines.insert(0, f"unknown {noun} {', '.join(hints)}; {known}")
    return "; ".join(lines)


# pydantic's words for a wrong type, in JSON's terms.
_TYPE_PROBLEMS = {
    "int_type": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "list_type": "must be an array",
    "dict_type": "must be an object",
}


def _problem(name: str, loc: list[str], error: Any) -> str:
    if error["type"] == "missing":
        return f"missing required argument {name!r}"
    where = name + "".join(f"[{part}]" for part in loc[1:])
    message = _TYPE_PROBLEMS.get(error["type"]) or str(error["msg"]).removeprefix("Input ").replace(
        "should be", "must be", 1
    )
    return f"argument {where!r} {message}, got {_shown(error.get('input'))}"


def _shown(value: Any) -> str:
    """A short description of a rejected JSON value (the caller's own data, cut short)."""
    if isinstance(value, str):
        return f"the string {value[:MAX_SHOWN_CHARS]!r}" + ("…" if len(value) > MAX_SHOWN_CHARS else "")
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return "a very large integer"  # Python refuses to print one of over 4,300 digits
    text = json.dumps(value)
    return text if len(text) <= MAX_SHOWN_CHARS else text[:MAX_SHOWN_CHARS] + "…"


def _fields(model: type[BaseModel]) -> dict[str, Any]:
    """The model's fields by the name a client sends (the SDK aliases names that clash with pydantic's)."""
    return {field.alias or name: field for name, field in model.model_fields.items()}


def _takes_container(annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin in (list, dict):
        return True
    if origin in (Union, types.UnionType):
        return any(_takes_container(arg) for arg in get_args(annotation))
    return False
