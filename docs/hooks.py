"""MkDocs hooks: the configuration and CLI references, generated at build time.

A page holding ``<!-- generated: configuration -->`` gets every ``params.yaml`` key from
the pydantic models in ``transferpilot.config`` (type, default, constraints, description,
which strategies read it); ``<!-- generated: cli -->`` gets every command and option from
the Typer app. Nothing in them is typed by hand, so they cannot drift from the code.
"""

from __future__ import annotations

import enum
import json
import types
import typing
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

MARKER = "<!-- generated: {} -->"


def on_page_markdown(markdown: str, **_: Any) -> str:
    for name, render in (("configuration", configuration_reference), ("cli", cli_reference)):
        marker = MARKER.format(name)
        if marker in markdown:
            markdown = markdown.replace(marker, render())
    return markdown


def configuration_reference() -> str:
    from transferpilot.config import Params

    parts = []
    for section, field in Params.model_fields.items():
        model = field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        summary = (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        rows = ["| key | type | default | what |", "|---|---|---|---|"]
        for key, info in model.model_fields.items():
            what = _cell(info.description or "")
            strategies = (info.json_schema_extra or {}).get("strategies")  # type: ignore[union-attr]
            if strategies:
                what += f" *(read by: {', '.join(strategies)})*"
            rows.append(f"| `{section}.{key}` | {_type(info)} | {_default(info)} | {what} |")
        parts.append(f"## `{section}`\n\n{summary}\n\n" + "\n".join(rows))
    return "\n\n".join(parts)


def cli_reference() -> str:
    import typer
    from typer.cli import get_docs_for_click

    from transferpilot.cli import app

    command = typer.main.get_command(app)
    text = get_docs_for_click(obj=command, ctx=typer.Context(command), name="transferpilot")
    # Its first line is a "# transferpilot" title: the page has its own.
    return text.split("\n", 1)[1].strip()


def _cell(text: str) -> str:
    """Markdown for a table cell: pipes escaped, ``<name>`` kept as text outside code."""
    parts = text.replace("\n", " ").split("`")
    parts[::2] = [p.replace("<", "&lt;").replace(">", "&gt;") for p in parts[::2]]
    return "`".join(parts).replace("|", "\\|")


def _type(info: FieldInfo) -> str:
    name = _type_name(info.annotation)
    bounds = []
    for meta in info.metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            value = getattr(meta, attr, None)
            if value is not None:
                bounds.append(f"{sign} {value}")
        if isinstance(meta, annotated_types.MinLen):
            bounds.append(f"at least {meta.min_length}")
    return _cell(name + (f" ({', '.join(bounds)})" if bounds else ""))


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        return "[" + ", ".join(_type_name(a) for a in args) + "]"
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " | ".join(f"`{m.value}`" for m in annotation)
    if annotation is Path:
        return "path"
    return getattr(annotation, "__name__", str(annotation))


def _default(info: FieldInfo) -> str:
    value = info.default
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "`null`"
    if isinstance(value, tuple | list | bool):
        return f"`{json.dumps(list(value) if isinstance(value, tuple) else value)}`"
    return f"`{value}`"
