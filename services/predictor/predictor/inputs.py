"""Validation of /predict instances against the served model's input signature.

Text models take strings (or objects holding the text column); tabular models take records (objects of raw
feature columns). Errors name the offending field, e.g. ``instances[3].trip_distance``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import pandas as pd

_MISSING = object()


class InputError(ValueError):
    """A request whose content does not fit the model; becomes a 422 naming ``field``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _type_name(value: Any) -> str:
    return {str: "string", bool: "boolean", int: "integer", float: "number", list: "array",
            dict: "object", type(None): "null"}.get(type(value), type(value).__name__)


def _is_number(v: Any) -> bool:
    return (type(v) is int or type(v) is float)


def _is_integer(v: Any) -> bool:
    return type(v) is int or (type(v) is float and v.is_integer())


CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "double": (_is_number, "number"),
    "float": (_is_number, "number"),
    "long": (_is_integer, "integer"),
    "integer": (_is_integer, "integer"),
    "string": (lambda v: type(v) is str, "string"),
    "boolean": (lambda v: type(v) is bool, "boolean"),
    "datetime": (lambda v: type(v) is str or _is_number(v), "datetime string"),
    "binary": (lambda v: type(v) is str, "string"),
}


class Column:
    __slots__ = ("check", "expected", "name", "required", "type")

    def __init__(self, name: str, type_: str, required: bool = True) -> None:
        self.name, self.type, self.required = name, type_, required
        self.check, self.expected = CHECKS.get(type_, (lambda v: True, type_))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Column) and (self.name, self.type, self.required) == (
            other.name, other.type, other.required)

    def __hash__(self) -> int:
        return hash((self.name, self.type, self.required))


def check_list(instances: Any, max_instances: int) -> list[Any]:
    if not isinstance(instances, list):
        raise InputError("instances", f"expected a list, got {_type_name(instances)}")
    if not instances:
        raise InputError("instances", "must hold at least one instance")
    if len(instances) > max_instances:
        raise InputError("instances", f"at most {max_instances} instances per request, got {len(instances)}")
    return instances


class TextInputs:
    """Strings, or objects ``{"<text column>": "..."}``; the pipeline's first step takes a list of strings."""

    kind = "text"

    def __init__(self, column: str) -> None:
        self.column = column
        self.columns = [Column(column, "string")]

    def validate(self, instances: list[Any]) -> list[str]:
        for value in instances:
            if type(value) is not str:
                break
        else:
            return instances
        out: list[str] = []
        for i, value in enumerate(instances):
            if type(value) is str:
                out.append(value)
            elif type(value) is dict and type(value.get(self.column)) is str:
                out.append(value[self.column])
            elif type(value) is dict:
                got = value.get(self.column, _MISSING)
                if got is _MISSING or got is None:
                    raise InputError(f"instances[{i}].{self.column}", "missing required column")
                raise InputError(f"instances[{i}].{self.column}", f"expected a string, got {_type_name(got)}")
            else:
                raise InputError(f"instances[{i}]", f"expected a string (the '{self.column}' text), "
                                                    f"got {_type_name(value)}")
        return out

    def frame(self, rows: list[str]) -> list[str]:
        return rows


class RecordInputs:
    """Objects of raw feature columns, checked against the signature's columns and types."""

    kind = "records"

    def __init__(self, columns: list[Column]) -> None:
        self.columns = columns
        self.names = [c.name for c in columns]

    def validate(self, instances: list[Any]) -> list[dict[str, Any]]:
        columns = self.columns
        for i, record in enumerate(instances):
            if type(record) is not dict:
                raise InputError(f"instances[{i}]", f"expected an object of feature columns, got {_type_name(record)}")
            for col in columns:
                value = record.get(col.name, _MISSING)
                if value is _MISSING or value is None:
                    if col.required:
                        raise InputError(f"instances[{i}].{col.name}", "missing required column")
                elif not col.check(value):
                    raise InputError(f"instances[{i}].{col.name}",
                                     f"expected {col.expected}, got {_type_name(value)}")
        return instances

    def frame(self, rows: list[dict[str, Any]]) -> pd.DataFrame:
        return pd.DataFrame.from_records(rows, columns=self.names)


class AnyInputs:
    """Models without a column signature: records become a DataFrame, anything else is passed as a list."""

    kind = "any"
    columns: ClassVar[list[Column]] = []

    def validate(self, instances: list[Any]) -> list[Any]:
        return instances

    def frame(self, rows: list[Any]) -> Any:
        if rows and all(type(r) is dict for r in rows):
            return pd.DataFrame.from_records(rows)
        return rows


Inputs = TextInputs | RecordInputs | AnyInputs


def inputs_for_schema(schema: Any, text_hint: str | None = None) -> Inputs:
    """The adapter for an MLflow input ``Schema`` (None or tensor-based: no checks)."""
    columns: list[Column] = []
    if schema is not None and not getattr(schema, "is_tensor_spec", lambda: False)():
        for spec in schema.inputs:
            if spec.name is None:
                continue
            type_ = getattr(getattr(spec, "type", None), "name", str(getattr(spec, "type", "")))
            columns.append(Column(spec.name, type_, bool(getattr(spec, "required", True))))
    if len(columns) == 1 and columns[0].type == "string":
        return TextInputs(columns[0].name)
    if columns:
        return RecordInputs(columns)
    if text_hint:
        return TextInputs(text_hint)
    return AnyInputs()
