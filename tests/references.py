"""The official implementations the faithfulness tests compare against, read from their files at fixed commits.

Nothing of theirs is vendored into mspt: a test reads one file of a public repository at the commit
we matched (docs/backbones.md says which), from the first folder that holds it in the layout
``<folder>/<owner>+<name>/<path in the repository>``:

- ``$MSPT_REFERENCES``, where it is set (``make references`` clones both repositories into
  ``references/`` at these commits and says how to set it), else
- ``../shared/references`` beside the repository, where it exists (CI has it);

and the test skips with a note saying where it looked and how to fetch them. The tests are marked
``faithfulness``; the end of a pytest run says how many of them ran and how many skipped (conftest.py).
Imports the reference needs and that do not install here (timm, torch-cluster, balltree-erwin) are given
as small stand-ins for exactly the names the file uses; each stand-in is named in the test that passes it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

#: The commits the tests were matched at (the Makefile's ``references`` target clones the same).
ERWIN = ("maxxxzdn/erwin", "83faaf9", "models/erwin.py")
TRANSOLVER = ("thuml/Transolver", "75e0f67", "Car-Design-ShapeNetCar/models/Transolver.py")

SHARED = Path(__file__).resolve().parents[2] / "shared" / "references"


def reference_folders() -> list[Path]:
    """Where the references are looked for, in order: ``$MSPT_REFERENCES`` if set, else the shared folder."""
    env = os.environ.get("MSPT_REFERENCES")
    return [Path(env)] if env else [SHARED]


def reference_source(repo: str, commit: str, path: str) -> str:
    """The text of ``path`` in ``repo`` at ``commit``, or skip the test saying where it was looked for."""
    tried = [folder / repo.replace("/", "+") / path for folder in reference_folders()]
    for file in tried:
        if file.is_file():
            return file.read_text()
    import pytest

    pytest.skip(
        f"reference {repo}@{commit}:{path} not found (looked in {', '.join(map(str, tried))}); "
        "run `make references` and set MSPT_REFERENCES as it says"
    )


def load_reference(repo: str, commit: str, path: str, *, stand_ins: dict[str, dict[str, object]] | None = None):
    """Execute the reference file as a fresh module, with ``stand_ins`` {module name: {attribute: value}}
    placed in ``sys.modules`` for the duration of the import only."""
    import pytest

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


def fetch(folder: Path) -> None:
    """Clone each reference repository into ``folder/<owner>+<name>`` and check out its commit (``make references``)."""
    for repo, commit, _ in (ERWIN, TRANSOLVER):
        checkout = folder / repo.replace("/", "+")
        if not checkout.is_dir():
            subprocess.run(["git", "clone", "--quiet", f"https://github.com/{repo}", str(checkout)], check=True)
        subprocess.run(["git", "-C", str(checkout), "checkout", "--quiet", commit], check=True)
    print(f"references in {folder}; the faithfulness tests read them with: export MSPT_REFERENCES={folder.resolve()}")


if __name__ == "__main__":  # python tests/references.py FOLDER (pytest is not needed for this)
    fetch(Path(sys.argv[1]))
