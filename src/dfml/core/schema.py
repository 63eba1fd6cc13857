"""The base of every params section model (pydantic v2) and the words for what a field accepts.

A section is a frozen pydantic model that forbids unknown keys, takes values only of their own type (strict:
``"5"`` is not 5, ``true`` is not 1), and refuses NaN and infinity. Each field's description is what the
README's parameter table says; :func:`accepts` turns the field's type and bounds into words
("an integer >= 1", "one of 'zo', 'exact'") for that table and for error messages.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, Union

import annotated_types as at
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.fields import FieldInfo

__all__ = ["Section", "Field", "accepts", "PosInt", "NonNegInt", "PosFloat", "NonNegFloat", "Seed", "Distinct"]

PosInt = typing.Annotated[int, at.Ge(1)]
NonNegInt = typing.Annotated[int, at.Ge(0)]
PosFloat = typing.Annotated[float, at.Gt(0)]
NonNegFloat = typing.Annotated[float, at.Ge(0)]
Seed = typing.Annotated[int, at.Ge(0), at.Lt(2**63)]


def _no_repeats(v):
    if v is not None and len(set(v)) != len(v):
        raise ValueError(f"lists {v} with a repeat; list each once")
    return v


Distinct = AfterValidator(_no_repeats)  # Annotated[list[...], Distinct]: a list that names nothing twice


class Section(BaseModel):
    """A params section: frozen, strict, finite, no unknown keys."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)

    def __getitem__(self, key: str) -> Any:  # read-only mapping access, for code that prints or hashes sections
        return getattr(self, key)


def _bounds(metadata: list) -> str:
    words = []
    for m in metadata:
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if isinstance(m, getattr(at, attr.capitalize())):
                words.append(f"{sym} {getattr(m, attr)}")
        if isinstance(m, at.MultipleOf):
            words.append(f"a multiple of {m.multiple_of}")
    return " and ".join(words)


def _words(tp: Any, metadata: list | None = None) -> str:
    metadata = metadata or []
    metadata = [x for m in metadata for x in (m.metadata if isinstance(m, FieldInfo) else [m])]
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        base, *meta = typing.get_args(tp)
        return _words(base, [*metadata, *meta])
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        text = " or ".join(_words(a, metadata) for a in args)
        return ("null, or " if len(args) < len(typing.get_args(tp)) else "") + text
    if origin is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(tp))
    if origin is list:
        (inner,) = typing.get_args(tp)
        least = max([m.min_length for m in metadata if isinstance(m, at.MinLen)] or [0])
        lead = {0: "a list", 1: "a non-empty list"}.get(least, f"a list of {least} or more")
        return f"{lead}, each {_words(inner)}"
    bounds = _bounds(metadata)
    if tp is bool:
        return "true or false"
    if tp is int:
        return f"an integer {bounds}".strip()
    if tp is float:
        return f"a finite number {bounds}".strip()
    if tp is str:
        return "a string"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return f"a mapping with keys {', '.join(tp.model_fields)}"
    return getattr(tp, "__name__", str(tp))


def accepts(field: FieldInfo) -> str:
    """What `field` accepts, in words."""
    if field.json_schema_extra and "accepts" in field.json_schema_extra:
        return str(field.json_schema_extra["accepts"])
    return _words(field.annotation, list(field.metadata))
