"""The search/paginate filter language: And/Or nodes over Equal, In, Like, LessThan... leaves.

A filter is compiled once (malformed filters are a 400 ProblemDetails) into a predicate. Field names
and operators are case-insensitive; ``In``/``NotIn`` accept ``value`` or ``values`` (the SDKs disagree);
a list-valued field such as ``Tags`` matches when it *contains* the value.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .exceptions import ValidationProblem
from .formats import parse_date

T = TypeVar("T")
Predicate = Callable[[T], bool]

KINDS = ("str", "enum", "int", "float", "date", "bool", "list", "dict")
LEAF_OPERATORS = {
    "equal": "Equal",
    "notequal": "NotEqual",
    "in": "In",
    "notin": "NotIn",
    "like": "Like",
    "lessthan": "LessThan",
    "lessthanorequal": "LessThanOrEqual",
    "greaterthan": "GreaterThan",
    "greaterthanorequal": "GreaterThanOrEqual",
}
NODE_OPERATORS = {"and": "And", "or": "Or"}
MAX_DEPTH = 32


@dataclass(frozen=True)
class FieldDef(Generic[T]):
    """How to read one filterable field from an object, and what kind of value it holds."""

    getter: Callable[[T], Any]
    kind: str = "str"


def _problem(message: str) -> ValidationProblem:
    return ValidationProblem.single("Filter", message)


def _lower_keys(data: dict[str, Any]) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in data.items()}


def _coerce(value: Any, kind: str, field: str) -> Any:
    """Turn a filter value into something comparable with the field's values."""
    if value is None:
        return None
    if kind in ("str", "list", "dict"):
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (str, int, float)):
            return str(value)
        raise _problem(f"The value for field {field} must be a string.")
    if kind == "enum":
        if not isinstance(value, str):
            raise _problem(f"The value for field {field} must be a string.")
        return value.lower()
    if kind in ("int", "float"):
        if isinstance(value, bool):
            raise _problem(f"The value for field {field} must be a number.")
        if isinstance(value, (int, float)):
            return value
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise _problem(f"The value for field {field} must be a number.")
    if kind == "date":
        if isinstance(value, bool):
            raise _problem(f"The value for field {field} must be a date.")
        if isinstance(value, (int, float)):
            try:
                return float(value)
            except OverflowError:
                raise _problem(f"The value for field {field} is out of range.") from None
        if isinstance(value, str):
            try:
                return parse_date(value)
            except (ValueError, OverflowError):
                pass
        raise _problem(f"The value for field {field} must be a date.")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise _problem(f"The value for field {field} must be a boolean.")
    raise _problem(f"Field {field} cannot be filtered.")


def _normalise_field_value(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "enum":
        return str(value).lower()
    if kind == "list":
        return [str(v) for v in value]
    if kind == "date":
        return round(float(value), 6)  # dates are rendered (and compared) to the microsecond
    return value


def _ordered(a: Any, b: Any) -> tuple[Any, Any] | None:
    """Make two values comparable, or None if they are not."""
    if a is None or b is None:
        return None
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return a, b
    if isinstance(a, str) and isinstance(b, str):
        return a, b
    return None


def _leaf(op: str, getter: Callable[[Any], Any], kind: str, target: Any, field: str) -> Predicate[Any]:
    """Build the predicate of one leaf with an already-coerced target."""
    if op in ("In", "NotIn"):
        targets = target if isinstance(target, list) else [target]
        if any(isinstance(t, (list, dict)) for t in targets):
            raise _problem(f"The values for field {field} must be scalars.")
        wanted = {_coerce(t, kind, field) for t in targets}

        def in_pred(obj: Any) -> bool:
            value = _normalise_field_value(getter(obj), kind)
            if isinstance(value, list):
                return any(v in wanted for v in value)
            return value in wanted

        if op == "In":
            return in_pred
        return lambda obj: not in_pred(obj)

    if isinstance(target, (list, dict)):
        if kind == "dict" and isinstance(target, dict) and op in ("Equal", "NotEqual"):
            expected = {str(k): str(v) for k, v in target.items()}

            def dict_pred(obj: Any) -> bool:
                value = getter(obj) or {}
                return all(value.get(k) == v for k, v in expected.items())

            return dict_pred if op == "Equal" else (lambda obj: not dict_pred(obj))
        raise _problem(f"The value for field {field} must be a scalar for operator {op}.")

    if op == "Like":
        if not isinstance(target, str):
            raise _problem("The Like operator needs a string (regular expression) value.")
        try:
            pattern = re.compile(target, re.IGNORECASE if kind == "enum" else 0)
        except (re.error, RecursionError, OverflowError) as exc:
            raise _problem(f"Invalid regular expression for Like: {exc}.") from exc

        def like_pred(obj: Any) -> bool:
            value = getter(obj)
            if value is None:
                return False
            if isinstance(value, list):
                return any(pattern.search(str(v)) for v in value)
            return pattern.search(str(value)) is not None

        return like_pred

    wanted_value = _coerce(target, kind, field)
    if op in ("Equal", "NotEqual"):

        def eq_pred(obj: Any) -> bool:
            value = _normalise_field_value(getter(obj), kind)
            if isinstance(value, list):
                return wanted_value in value
            if isinstance(value, dict):
                return False
            return bool(value == wanted_value)

        return eq_pred if op == "Equal" else (lambda obj: not eq_pred(obj))

    compare: dict[str, Callable[[Any, Any], bool]] = {
        "LessThan": lambda a, b: a < b,
        "LessThanOrEqual": lambda a, b: a <= b,
        "GreaterThan": lambda a, b: a > b,
        "GreaterThanOrEqual": lambda a, b: a >= b,
    }
    comparator = compare[op]

    def cmp_pred(obj: Any) -> bool:
        pair = _ordered(_normalise_field_value(getter(obj), kind), wanted_value)
        return pair is not None and comparator(pair[0], pair[1])

    return cmp_pred


def _resolve_field(name: str, fields: Mapping[str, FieldDef[Any]]) -> tuple[Callable[[Any], Any], str]:
    key = name.lower()
    definition = fields.get(key)
    if definition is not None:
        return definition.getter, definition.kind
    if "." in key:
        base, sub = name.split(".", 1)
        parent = fields.get(base.lower())
        if parent is not None and parent.kind == "dict":
            parent_getter = parent.getter
            return (lambda obj: (parent_getter(obj) or {}).get(sub)), "str"
    raise _problem(f"Unknown or non-filterable field '{name}'.")


def _or_of_equals(children: list[Any], fields: Mapping[str, FieldDef[Any]]) -> Predicate[Any] | None:
    """An ``Or`` of ``Equal`` leaves (already validated) as set lookups, one per field; None if it is not one.

    ``uuid_filter`` in the client sends 100 ``Uuid Equal`` leaves per page, and checking every task against
    every leaf made one such page cost 0.2 s with 5,000 tasks; a set lookup gives the same matches.
    """
    if len(children) < 2:
        return None
    groups: dict[str, tuple[Callable[[Any], Any], str, set[Any]]] = {}
    for child in children:
        node = _lower_keys(child)
        operator, field = node.get("operator"), node.get("field")
        if not isinstance(operator, str) or operator.lower() != "equal" or not isinstance(field, str):
            return None
        getter, kind = _resolve_field(field, fields)
        target = node["values"] if node.get("values") is not None else node.get("value")
        if kind == "dict" or isinstance(target, (list, dict)):
            return None
        _, _, wanted = groups.setdefault(field.lower(), (getter, kind, set()))
        wanted.add(_coerce(target, kind, field))
    lookups = list(groups.values())

    def any_equal(obj: Any) -> bool:
        for getter, kind, wanted in lookups:
            value = _normalise_field_value(getter(obj), kind)
            if isinstance(value, list):
                if any(v in wanted for v in value):
                    return True
            elif not isinstance(value, dict) and value in wanted:
                return True
        return False

    return any_equal


def compile_filter(data: Any, fields: Mapping[str, FieldDef[Any]], depth: int = 0) -> Predicate[Any]:
    """Compile a filter JSON object into a predicate; ``None`` matches everything."""
    if data is None:
        return lambda obj: True
    if depth > MAX_DEPTH:
        raise _problem("The filter is nested too deeply.")
    if not isinstance(data, dict):
        raise _problem("A filter must be a JSON object.")
    node = _lower_keys(data)
    operator = node.get("operator")
    if not isinstance(operator, str):
        raise _problem("A filter needs an 'operator'.")
    op_key = operator.lower()
    if op_key in NODE_OPERATORS:
        children = node.get("filters")
        if not isinstance(children, list):
            raise _problem(f"The {NODE_OPERATORS[op_key]} operator needs a 'filters' array.")
        predicates = [compile_filter(child, fields, depth + 1) for child in children]
        if op_key == "and":
            return lambda obj: all(p(obj) for p in predicates)
        fast = _or_of_equals(children, fields)
        if fast is not None:
            return fast
        return lambda obj: any(p(obj) for p in predicates)
    if op_key not in LEAF_OPERATORS:
        raise _problem(f"Unknown filter operator '{operator}'.")
    op = LEAF_OPERATORS[op_key]
    field = node.get("field")
    if not isinstance(field, str) or not field:
        raise _problem(f"The {op} operator needs a 'field'.")
    getter, kind = _resolve_field(field, fields)
    target = node["values"] if node.get("values") is not None else node.get("value")
    if op in ("In", "NotIn") and not isinstance(target, list):
        target = [target]
    return _leaf(op, getter, kind, target, field)
