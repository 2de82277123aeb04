"""The compiled build of the pure core: the engine's hot modules (and the worker's pure task
with its store, rule book and record helpers) compiled to C extensions by mypyc (from the same
sources, same semantics), used when a build that matches the sources exists.

`scripts/build_native.py` (run by the README's set-up commands, `make native` by hand) compiles
`MODULES` into `.native/<tag>-<fingerprint>/`, where the fingerprint is a hash of every source
file the compiled code is built against (model/, rules/, streams/; of streams/runtime/ only
the task and the modules it imports). At import, `activate` (called by the `__init__` of
model, rules, streams and streams.runtime) puts that
directory first on the package's `__path__`, so `import rules.functions` loads the compiled
module, and its `lib/` on `sys.path` (the shared library the modules link to). A
build whose sources have changed since has another fingerprint and is not found: an edited
module is never shadowed by a stale compiled one; the code then runs as plain Python (the same
answers, 1.5-1.6x slower; `native_status()` says which, the worker logs it at start-up).

`SEGMENTER_NATIVE=0` in the environment turns the compiled build off (the tests of the pure
code run both ways).
"""

from __future__ import annotations

import hashlib
import os
import sys
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The modules compiled: the engine's path of every event and timer (paths from ROOT).
MODULES = (
    "model/state.py",
    "model/events.py",
    "model/changes.py",
    "model/codec.py",
    "rules/context.py",
    "rules/functions.py",
    "rules/evaluate.py",
    "streams/due_index.py",
    "streams/engine.py",
    "streams/annotated.py",
    "streams/simulate.py",
    "streams/merge.py",
    "rules/program.py",
    "rules/compiler.py",
    "rules/ruleset.py",
    "streams/runtime/task.py",
    "streams/runtime/store.py",
    "streams/runtime/rulebook.py",
    "streams/runtime/records.py",
)
# What the compiled code is built against: a change anywhere here means another build.
_SOURCES = ("model", "rules", "streams")
_EXCLUDED = ("streams/runtime/",)
# the runtime's pure modules the compiled task is built against
_ALSO = frozenset({"streams/runtime/__init__.py", "streams/runtime/task.py",
                   "streams/runtime/records.py", "streams/runtime/rulebook.py",
                   "streams/runtime/store.py"})
ENV = "SEGMENTER_NATIVE"


def _sources(root: Path) -> list[Path]:
    out = []
    for top in _SOURCES:
        for p in sorted((root / top).rglob("*.py")):
            rel = p.relative_to(root).as_posix()
            if not rel.startswith(_EXCLUDED) or rel in _ALSO:
                out.append(p)
    return out


@cache
def fingerprint(root: Path = ROOT) -> str:
    """A hash of the sources the build is made from (and of the module list)."""
    h = hashlib.sha256("\n".join(MODULES).encode())
    for p in _sources(root):
        h.update(p.relative_to(root).as_posix().encode())
        h.update(b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()[:20]


def build_dir(root: Path = ROOT) -> Path:
    """Where the build for the sources under `root` and this interpreter lives (or would)."""
    return root / ".native" / f"{sys.implementation.cache_tag}-{fingerprint(root)}"


@cache
def _enabled() -> bool:
    if _off():
        return False
    done = build_dir() / "BUILT"
    if not done.is_file():
        return False
    # the shared library of the compiled modules (a unique name), in a directory of its own:
    # the build's package directories must never be on sys.path (`import streams` would find
    # a namespace package there before an editable install's finder finds the real one)
    d = str(build_dir() / "lib")
    if d not in sys.path:
        sys.path.append(d)
    return True


def activate(package_path: list[str], package: str) -> None:
    """Put the compiled build's directory of `package` first on its `__path__` (when a build
    matching the sources exists and is not turned off)."""
    try:
        on = _enabled()
    except OSError:  # sources unreadable: plain Python
        return
    if on:
        sub = str(build_dir().joinpath(*package.split(".")))
        if sub not in package_path:
            package_path.insert(0, sub)


def _off() -> bool:
    return os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off")


def native_status() -> str:
    """Whether the engine runs compiled, or why not (for logs and reports)."""
    import model.state

    if not str(model.state.__file__).endswith(".py"):
        return "compiled (mypyc)"
    if _off():
        return f"plain Python ({ENV}=0)"
    return "plain Python (no compiled build of these sources: make native)"
