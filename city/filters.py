"""Attribute filters: the filter dialect, compiled once into plain Python predicates.

Subscriptions, sharing policies (`when:`) and derived-event rules all filter events in this one
dialect; it lives on its own so each of them can import it without importing the others.
Pure: imports nothing from the project.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

Predicate = Callable[[Mapping[str, Any]], bool]
_MISSING: Any = object()


class FilterError(ValueError):
    """A filter that cannot be compiled; `where` is the path inside the filter."""

    def __init__(self, where: str, message: str):
        self.where = where
        super().__init__(f"{where or '<filter>'}: {message}")


def _getter(path: str, where: str) -> Callable[[Mapping[str, Any]], Any]:
    """A function reading an event attribute (``type``) or a data path (``data.severity``)."""
    if not isinstance(path, str) or not path or any(not p for p in path.split(".")):
        raise FilterError(where, f"attribute path {path!r} must be 'name' or 'data.field'")
    parts = path.split(".")
    if len(parts) == 1:
        name = parts[0]
        return lambda e: e.get(name, _MISSING)
    if len(parts) == 2:
        first, second = parts

        def get2(e: Mapping[str, Any]) -> Any:
            inner = e.get(first)
            return inner.get(second, _MISSING) if isinstance(inner, dict) else _MISSING

        return get2

    def get_n(e: Mapping[str, Any]) -> Any:
        value: Any = e
        for part in parts:
            if not isinstance(value, dict):
                return _MISSING
            value = value.get(part, _MISSING)
        return value

    return get_n


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _comparison(
    op: str, get: Callable[[Mapping[str, Any]], Any], operand: Any, where: str
) -> Predicate:
    if _is_number(operand):
        same_kind: Callable[[Any], bool] = _is_number
    elif isinstance(operand, str):

        def same_kind(v: Any) -> bool:
            return isinstance(v, str)

    else:
        raise FilterError(where, f"{op} needs a number or a string, not {operand!r}")
    if op == "lt":
        return lambda e: same_kind(v := get(e)) and v < operand
    if op == "le":
        return lambda e: same_kind(v := get(e)) and v <= operand
    if op == "gt":
        return lambda e: same_kind(v := get(e)) and v > operand
    return lambda e: same_kind(v := get(e)) and v >= operand


def _leaf(op: str, path: str, operand: Any, where: str) -> Predicate:
    get = _getter(path, where)
    if op in ("eq", "exact"):
        if isinstance(operand, dict | list):
            raise FilterError(where, f"{op} compares with a single value, not {operand!r}")
        # bool is an int in Python: keep True from equalling 1.
        if isinstance(operand, bool) or _is_number(operand):
            kind = bool if isinstance(operand, bool) else (int, float)
            return lambda e: (
                (isinstance(v := get(e), kind) and isinstance(v, bool) == isinstance(operand, bool))
                and v == operand
            )
        return lambda e: get(e) == operand
    if op == "ne":
        inner = _leaf("eq", path, operand, where)
        return lambda e: not inner(e)
    if op == "in":
        if not isinstance(operand, list) or not operand:
            raise FilterError(where, "in needs a non-empty list of values")
        if any(isinstance(v, dict | list) for v in operand):
            raise FilterError(where, "in values must be strings, numbers or booleans")
        if any(isinstance(v, bool) for v in operand):
            options = [_leaf("eq", path, v, where) for v in operand]
            return lambda e: any(o(e) for o in options)
        values = frozenset(operand)
        return lambda e: (
            (v := get(e)) is not _MISSING and not isinstance(v, dict | list | bool) and v in values
        )
    if op in ("lt", "le", "gt", "ge"):
        return _comparison(op, get, operand, where)
    if op in ("prefix", "suffix"):
        if not isinstance(operand, str):
            raise FilterError(where, f"{op} needs a string")
        if op == "prefix":
            return lambda e: isinstance(v := get(e), str) and v.startswith(operand)
        return lambda e: isinstance(v := get(e), str) and v.endswith(operand)
    raise FilterError(where, f"unknown operator {op!r}")  # pragma: no cover - guarded by caller


_LEAF_OPS = ("eq", "exact", "ne", "in", "lt", "le", "gt", "ge", "prefix", "suffix")


def _all(preds: Sequence[Predicate]) -> Predicate:
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        a, b = preds
        return lambda e: a(e) and b(e)
    items = tuple(preds)
    return lambda e: all(p(e) for p in items)


def _any(preds: Sequence[Predicate]) -> Predicate:
    items = tuple(preds)
    return lambda e: any(p(e) for p in items)


def _not(inner: Predicate) -> Predicate:
    return lambda e: not inner(e)


def _exists(get: Callable[[Mapping[str, Any]], Any]) -> Predicate:
    return lambda e: get(e) is not _MISSING


def compile_filter(spec: Any, where: str = "") -> Predicate:
    """Compile a filter into one Python predicate over the wire event dict.

    Dialect (after the CloudEvents Subscriptions API filters): a mapping of operators, all of
    which must hold. Leaf operators take ``{attribute_path: operand}`` mappings (every pair
    must hold): ``eq``/``exact``, ``ne``, ``in`` (list), ``lt``/``le``/``gt``/``ge`` (numbers
    or strings, never mixed), ``prefix``/``suffix`` (strings); ``exists`` takes a path or a
    list of paths. ``all``/``any`` take lists of filters, ``not`` one filter. Paths are event
    attributes (``type``, ``priority``) or data fields (``data.severity``). A missing
    attribute or a value of the wrong type makes a leaf false (``ne``: true).
    """
    if not isinstance(spec, dict) or not spec:
        raise FilterError(where, "a filter is a non-empty mapping of operators")
    preds: list[Predicate] = []
    for op, arg in spec.items():
        here = f"{where}.{op}" if where else op
        if op in _LEAF_OPS:
            if not isinstance(arg, dict) or not arg:
                raise FilterError(here, f"{op} takes a mapping {{attribute: value}}")
            preds.extend(_leaf(op, path, value, f"{here}.{path}") for path, value in arg.items())
        elif op == "exists":
            paths = [arg] if isinstance(arg, str) else arg
            if not isinstance(paths, list) or not paths:
                raise FilterError(here, "exists takes an attribute path or a list of them")
            for path in paths:
                get = _getter(path, here)
                preds.append(_exists(get))
        elif op in ("all", "any"):
            if not isinstance(arg, list) or not arg:
                raise FilterError(here, f"{op} takes a non-empty list of filters")
            subs = [compile_filter(s, f"{here}[{i}]") for i, s in enumerate(arg)]
            if op == "all":
                preds.append(_all(subs))
            else:
                preds.append(_any(subs))
        elif op == "not":
            preds.append(_not(compile_filter(arg, here)))
        else:
            raise FilterError(here, f"unknown operator {op!r}")
    return _all(preds)


def _check_filter(spec: dict[str, Any] | None) -> dict[str, Any] | None:
    if spec is not None:
        try:
            compile_filter(spec)
        except FilterError as exc:
            raise ValueError(str(exc)) from None
    return spec
