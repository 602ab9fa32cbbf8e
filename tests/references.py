"""The official implementations the faithfulness tests compare against, loaded from fetched snapshots.

Nothing of theirs is vendored into mspt: a test reads one file of a public repository at the commit
we matched (docs/model.md says which), from the first place that has it:

- ``$MSPT_REFERENCES/<owner>+<name>/``: a checkout (a work tree) of the repository, or
- ``/work/.mirror/<owner>+<name>/repo``: a bare git snapshot (``git show <commit>:<path>``),

and the test skips with a note where neither holds it. Imports the reference needs and that do not
install here (timm, torch-cluster, balltree-erwin) are given as small stand-ins for exactly the
names the file uses; each stand-in is named in the test that passes it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

#: The commits the tests were matched at.
ERWIN = ("maxxxzdn/erwin", "83faaf9", "models/erwin.py")
TRANSOLVER = ("thuml/Transolver", "75e0f67", "Car-Design-ShapeNetCar/models/Transolver.py")


def reference_source(repo: str, commit: str, path: str) -> str:
    """The text of ``path`` in ``repo`` at ``commit``, or skip the test saying where it was looked for."""
    slug = repo.replace("/", "+")
    tried = []
    env = os.environ.get("MSPT_REFERENCES")
    if env:
        file = Path(env) / slug / path
        tried.append(str(file))
        if file.is_file():
            return file.read_text()
    mirror = Path("/work/.mirror") / slug / "repo"
    tried.append(f"{mirror} @ {commit}")
    if mirror.is_dir():
        done = subprocess.run(
            ["git", "--git-dir", str(mirror), "show", f"{commit}:{path}"], capture_output=True, text=True, check=False
        )
        if done.returncode == 0:
            return done.stdout
    pytest.skip(f"reference {repo}:{path} not found (looked in {', '.join(tried)}; set MSPT_REFERENCES)")


def load_reference(repo: str, commit: str, path: str, *, stand_ins: dict[str, dict[str, object]] | None = None):
    """Execute the reference file as a fresh module, with ``stand_ins`` {module name: {attribute: value}}
    placed in ``sys.modules`` for the duration of the import only."""
    pytest.importorskip("einops")
    source = reference_source(repo, commit, path)
    saved = {}
    for name, attrs in (stand_ins or {}).items():
        saved[name] = sys.modules.get(name)
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        while parent:  # packages above a dotted stand-in
            saved.setdefault(parent, sys.modules.get(parent))
            pkg = sys.modules.get(parent) if saved[parent] is None else types.ModuleType(parent)
            pkg = pkg or types.ModuleType(parent)
            setattr(pkg, child, sys.modules[f"{parent}.{child}"])
            sys.modules[parent] = pkg
            parent, _, child = parent.rpartition(".")
    try:
        module = types.ModuleType(f"reference_{Path(path).stem}")
        sys.modules[module.__name__] = module  # dataclasses look their module up while the file runs
        exec(compile(source, f"{repo}@{commit}:{path}", "exec"), module.__dict__)
        return module
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old
