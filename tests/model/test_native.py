"""model/native.py: the compiled build is used exactly when it matches the sources."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from model import native

ROOT = Path(__file__).resolve().parents[2]
_WHICH = ("import model.state, rules.functions, streams.engine, model.wire\n"
          "from model.native import native_status\n"
          "print(model.state.__file__, rules.functions.__file__, streams.engine.__file__,"
          " model.wire.__file__, sep='\\n')\n"
          "print(native_status())\n"
          "import sys, os\n"
          "print([p for p in sys.path if any(os.path.isdir(os.path.join(p, d))"
          " for d in ('model', 'rules', 'streams')) and '.native' in p])\n")


def _tree(tmp: Path) -> Path:
    for pkg in ("model", "rules", "streams"):
        shutil.copytree(ROOT / pkg, tmp / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp


def _which(root: Path, **env: str) -> list[str]:
    base = {k: v for k, v in os.environ.items() if k != native.ENV}  # (make test sets it)
    out = subprocess.run([sys.executable, "-c", _WHICH], cwd=root, capture_output=True,
                         text=True, check=True, env={**base, "PYTHONPATH": str(root), **env})
    return out.stdout.splitlines()


def test_the_fingerprint_follows_the_sources_the_build_is_made_against(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    before = native.fingerprint(root)
    assert native.fingerprint(root) == before
    (root / "streams" / "runtime" / "worker.py").write_text("# the I/O runtime is not compiled\n")
    native.fingerprint.cache_clear()
    assert native.fingerprint(root) == before
    (root / "rules" / "model.py").write_text((ROOT / "rules" / "model.py").read_text() + "\n#\n")
    native.fingerprint.cache_clear()
    assert native.fingerprint(root) != before
    assert native.build_dir(root).name.endswith(native.fingerprint(root))


def test_a_build_is_used_only_while_it_matches_the_sources(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    # no build: every module from its source
    files = _which(root)
    assert all(f.endswith(".py") for f in files[:4])
    assert files[4].startswith("plain Python (no compiled build")
    built = native.build_dir(ROOT)
    if not (built / "BUILT").is_file():
        return  # no compiler on this machine: nothing else to check
    # this checkout's build, copied to the tree's own place: the compiled modules are used
    native.fingerprint.cache_clear()
    shutil.copytree(built, native.build_dir(root))
    files = _which(root)
    assert [Path(f).suffix for f in files[:4]] == [".so", ".so", ".so", ".py"]
    assert all(f.startswith(str(native.build_dir(root))) for f in files[:3])
    assert files[4] == "compiled (mypyc)"
    # no directory of the build that holds packages is on sys.path: there `import streams`
    # (after `import model`) would find a namespace package before an editable install's finder
    assert files[5] == "[]"
    # turned off
    off = _which(root, SEGMENTER_NATIVE="0")
    assert all(f.endswith(".py") for f in off[:4]) and off[4].endswith("(SEGMENTER_NATIVE=0)")
    # an edited source: the build no longer matches and is not used
    (root / "rules" / "functions.py").write_text(
        (root / "rules" / "functions.py").read_text() + "\n# edited\n")
    files = _which(root)
    assert all(f.endswith(".py") for f in files[:4])


def test_the_test_suite_runs_the_compiled_build_when_there_is_one() -> None:
    """What `make test` builds is what the rest of the suite exercises."""
    import streams.engine

    native.fingerprint.cache_clear()
    expected = ".so" if (native.build_dir() / "BUILT").is_file() and os.environ.get(
        native.ENV, "1") != "0" else ".py"
    assert Path(str(streams.engine.__file__)).suffix == expected
