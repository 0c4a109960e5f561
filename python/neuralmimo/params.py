"""One validation layer: a parameter's type and range declared once, next to the parameter.

A parameter table (``{name: Param}``) sits next to the code that uses the values (for example
:data:`neuralmimo.channels.impairments.PARAMS`, :data:`neuralmimo.receiver.framesync.PARAMS`,
:data:`neuralmimo.site.retrain.PARAMS`). Every door a value comes in through uses the same entry:

* constructors call :meth:`Param.check` (or :func:`check_all`): ``ValueError`` naming the
  parameter, the value and the allowed range;
* GUI callbacks (``set_*``) call :meth:`Param.check` and, on ``ValueError``, log the message and
  keep the running value (the README's promise: "a GUI callback with a bad value is logged and
  ignored, a constructor raises ``ValueError``");
* the command line uses :meth:`Param.arg` as an argparse ``type`` (one line, exit 2);
* configs (YAML) call :meth:`Param.check` on their keys in ``check()``.
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


class ParamError(ValueError):
    """A value outside its declared type or range; the message names both, in one line."""


@dataclass(frozen=True)
class Param:
    """A scalar parameter: ``kind`` (``int``, ``float``, ``bool`` or ``str``), an inclusive range
    ``[lo, hi]`` (either end open with ``lo_open``/``hi_open``; ``None``: unbounded), or the
    allowed ``choices``; ``unit`` and ``doc`` for messages. Floats must be finite."""

    kind: type
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple | None = None
    unit: str = ""
    doc: str = ""

    def describe(self) -> str:
        """The allowed values in words (for messages and ``--help``)."""
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        what = {int: "a whole number", float: "a finite number", bool: "true or false", str: "text"}[self.kind]
        if self.lo is not None and self.hi is not None:
            what += f" in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
        elif self.lo is not None:
            what += f" {'>' if self.lo_open else '>='} {self.lo:g}"
        elif self.hi is not None:
            what += f" {'<' if self.hi_open else '<='} {self.hi:g}"
        return what + (f" [{self.unit}]" if self.unit else "")

    def check(self, value, name: str = "value"):
        """``value`` converted to ``kind``; :class:`ParamError` if it is not one of the allowed values."""
        v = self._convert(value, name)
        if self.choices is not None:
            if v not in self.choices:
                raise ParamError(f"{name} = {value!r}: expected {self.describe()}")
            return v
        if self.kind in (int, float):
            bad = (self.lo is not None and (v < self.lo or (self.lo_open and v == self.lo))) or \
                  (self.hi is not None and (v > self.hi or (self.hi_open and v == self.hi)))
            if bad:
                raise ParamError(f"{name} = {value!r}: expected {self.describe()}")
        return v

    def _convert(self, value, name):
        if self.kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, (int, float)) and value in (0, 1):
                return bool(value)
            raise ParamError(f"{name} = {value!r}: expected true or false")
        if self.kind is str:
            if not isinstance(value, str):
                raise ParamError(f"{name} = {value!r}: expected text")
            return value
        if isinstance(value, bool):
            raise ParamError(f"{name} = {value!r}: expected {self.describe()}")
        try:
            if self.kind is int:
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError
                v = int(value)
            else:
                v = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ParamError(f"{name} = {value!r}: expected {self.describe()}") from None
        if self.kind is float and not math.isfinite(v):
            raise ParamError(f"{name} = {value!r}: expected {self.describe()}")
        return v

    def arg(self, name: str):
        """An argparse ``type`` for option ``name`` (``--drop-rate``) using this declaration."""

        def parse(text):
            try:
                value = text
                if isinstance(text, str) and self.kind in (int, float):
                    try:
                        value = int(text) if self.kind is int else float(text)
                    except ValueError:
                        raise ParamError(f"{name} = {text!r}: expected {self.describe()}") from None
                return self.check(value, name)
            except ParamError as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None

        parse.__name__ = name.lstrip("-").replace("-", "_")  # argparse names the type in its message
        return parse


def check_all(table: dict[str, Param], values: dict, where: str = "") -> dict:
    """``{name: checked value}`` for every ``name`` of ``values`` that ``table`` declares
    (``ParamError`` for the first bad one; names not in the table are returned unchanged)."""
    out = dict(values)
    for name, v in values.items():
        if name in table:
            out[name] = table[name].check(v, f"{where}{name}")
    return out


def safe_name(name, what: str = "name") -> str:
    """A file or folder name a writer may create inside its folder: letters, digits, ``._+-``,
    at most 128 characters, not starting with a dot (no path separators, no ``..``, nothing
    hidden); :class:`ParamError` otherwise."""
    if not isinstance(name, str) or not _NAME.match(name) or name in (".", ".."):
        raise ParamError(f"{what} {name!r}: expected 1-128 letters, digits or ._+- (no '/', no leading '.')")
    return name
