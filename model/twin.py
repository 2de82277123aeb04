"""Fast construction of frozen dataclasses on hot paths.

A frozen dataclass's generated __init__ sets each field with object.__setattr__, about four
times a plain slot store, and runs as interpreted Python even when its module is compiled
(mypyc keeps the generated methods of a dataclass). A *twin* is a mutable dataclass with the
same fields and slots, so the same memory layout: a hot path makes an instance of the twin
(`object.__new__`, no __init__ call), fills it with plain stores and re-classes it
(`obj.__class__ = cls`). The result is an ordinary, frozen `cls`, equal to `cls(...)` with the
same arguments. `cls` must be a plain class for that (`@mypyc_attr(native_class=False)` in a
compiled module): a native class's layout is not the twin's.
"""

from __future__ import annotations

from dataclasses import MISSING, field, fields, make_dataclass
from typing import Any


def mutable_twin(cls: type) -> Any:
    """The mutable twin of the frozen slots dataclass `cls` (same fields, defaults, slots)."""
    specs: list[tuple[str, Any, Any]] = []
    for f in fields(cls):
        if f.default is not MISSING:
            specs.append((f.name, f.type, field(default=f.default)))
        elif f.default_factory is not MISSING:
            specs.append((f.name, f.type, field(default_factory=f.default_factory)))
        else:
            specs.append((f.name, f.type, field()))
    return make_dataclass(f"_Mutable{cls.__name__}", specs, slots=True)
