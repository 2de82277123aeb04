"""Compile the engine's hot modules with mypyc into `.native/` (see model/native.py).

    python scripts/build_native.py          # build if the sources changed since the last build
    python scripts/build_native.py --check  # exit 1 unless a build matches the sources

The README's set-up commands run it (scripts/lib.sh `ensure_venv`). Without mypyc (the `dev`
extra) or a C compiler it says so and exits 0: the code then runs as plain Python. The sources
are copied to a temporary directory and compiled there, so an interrupted build never leaves a
half-written `.native/` behind; the finished build is moved into place in one rename, and older
builds are deleted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["SEGMENTER_NATIVE"] = "0"  # this process imports the plain sources only

from model import native  # noqa: E402


def _log(msg: str) -> None:
    print(f"[native] {msg}", flush=True)


def _missing_toolchain() -> str | None:
    try:
        import mypyc  # noqa: F401
    except ImportError:
        return "mypyc is not installed (pip install mypy)"
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    if shutil.which(cc.split()[0]) is None and shutil.which("cc") is None:
        return f"no C compiler ({cc})"
    include = sysconfig.get_paths()["include"]
    if not Path(include, "Python.h").is_file():
        return f"no Python headers ({include}/Python.h)"
    return None


def build() -> Path:
    target = native.build_dir()
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="native-", dir=parent) as tmp:
        stage = Path(tmp, "src")
        for pkg in ("model", "rules", "streams"):
            shutil.copytree(ROOT / pkg, stage / pkg,
                            ignore=shutil.ignore_patterns("__pycache__"))
        _log(f"compiling {len(native.MODULES)} modules with mypyc (about a minute)")
        t0 = time.monotonic()
        out = subprocess.run([sys.executable, "-m", "mypyc", *native.MODULES], cwd=stage,
                             capture_output=True, text=True, check=False)
        if out.returncode:
            sys.stderr.write(out.stdout[-4000:] + out.stderr[-4000:])
            raise SystemExit(f"[native] mypyc failed (exit {out.returncode})")
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        made = Path(tmp, "out")
        for mod in native.MODULES:
            so = Path(mod).with_suffix(suffix)
            (made / so.parent).mkdir(parents=True, exist_ok=True)
            shutil.move(stage / so, made / so)
        (made / "lib").mkdir()
        for lib in stage.glob(f"*__mypyc{suffix}"):
            shutil.move(lib, made / "lib" / lib.name)
        (made / "BUILT").write_text(native.fingerprint() + "\n")
        try:
            made.rename(target)
        except OSError:
            if not (target / "BUILT").is_file():
                raise
            _log("another build of the same sources finished first")
        _log(f"built {target.relative_to(ROOT)} in {time.monotonic() - t0:.0f} s")
    for old in parent.iterdir():
        if old != target and old.is_dir() and not old.name.startswith("native-"):
            shutil.rmtree(old, ignore_errors=True)
    return target


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="exit 1 unless a build matches the current sources")
    args = ap.parse_args()
    done = native.build_dir() / "BUILT"
    if args.check:
        sys.exit(0 if done.is_file() else 1)
    if done.is_file():
        _log(f"up to date ({native.build_dir().relative_to(ROOT)})")
        return
    why = _missing_toolchain()
    if why is not None:
        _log(f"not built: {why}; the engine runs as plain Python")
        return
    build()


if __name__ == "__main__":
    main()
