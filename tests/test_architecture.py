"""The layer rule of docs/architecture.md, checked on the source: every import points down, commands stand alone."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import ROOT

PACKAGE = ROOT / "msptcli"

#: Top-level modules and packages of msptcli, lowest layer first (docs/architecture.md).
LAYERS = [
    {"__init__", "errors", "choices", "duration"},
    {"io", "geometry", "device"},
    {"physics", "model"},
    {"config", "config_text"},
    {"runtime"},
    {"data"},
    {"checkpoint", "evaluate", "options", "trust"},
    {"prepare", "train", "predict", "rollout", "export", "balltree", "inspect_mesh"},
    {"info"},  # reads what the commands wrote
    {"cli", "cli_options", "cli_output", "__main__"},
]
COMMANDS = LAYERS[-3]


def layer_of(name: str) -> int:
    for i, layer in enumerate(LAYERS):
        if name in layer:
            return i
    raise AssertionError(f"msptcli/{name} is in no layer of docs/architecture.md: add it there and here")


def imports(package: Path = PACKAGE) -> list[tuple[str, str, str]]:
    """(importing unit, imported unit, file) for every import of ``package``'s own modules inside it; a unit is
    a module or sub-package directly in ``package``, ``__init__`` for the package itself."""
    prefix = ".".join(package.relative_to(ROOT).parts)  # msptcli, msptcli.model
    found = []
    for path in sorted(package.rglob("*.py")):
        unit = path.relative_to(package).parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if name == prefix or name.startswith(prefix + "."):
                    target = name.removeprefix(prefix + ".").split(".")[0] if name != prefix else "__init__"
                    found.append((unit, target, str(path.relative_to(ROOT))))
    return found


def test_every_module_has_a_layer():
    units = {p.name.removesuffix(".py") for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    for unit in units:
        layer_of(unit)


def violations(found: list[tuple[str, str, str]]) -> list[str]:
    return [
        f"{file}: {unit} imports {target}"
        for unit, target, file in found
        if unit != target and (layer_of(target) > layer_of(unit) or (unit in COMMANDS and target in COMMANDS))
    ]


def test_imports_point_down_and_commands_stand_alone():
    found = imports()
    assert len(found) > 50  # the check reads real imports
    assert not violations(found), "\n".join(violations(found))


def test_the_check_can_fail():
    # predict reaching into train (a command into a command) and the model into the config (upwards)
    bad = [("predict", "train", "msptcli/predict.py"), ("model", "config", "msptcli/model/mspt.py")]
    assert violations(bad) == [
        "msptcli/predict.py: predict imports train",
        "msptcli/model/mspt.py: model imports config",
    ]


#: The modules of msptcli/model, lowest first: each imports only from ranks below its own, so the backbones never
#: import mspt.py (nor MSPT them), the building blocks nothing that is built of them (docs/architecture.md).
MODEL_ORDER = [
    {"config"},
    {"layout"},
    {"layers", "anchors"},
    {"queries"},
    {"pmsa"},
    {"mspt", "backbones"},
    {"spacetime"},
    {"network", "reference"},
    {"__init__"},
]
#: What model/ never imports: it defines networks, and the I/O is one layer up (runtime/, io/, checkpoint.py).
MODEL_NO_IO = ("msptcli.io", "pathlib", "os", "shutil", "tempfile", "io", "json", "zipfile", "pickle", "safetensors")
#: Calls that write files: ``open`` and these attributes (``torch.save``, ``Path.write_text``, ...).
WRITES = ("save", "write_text", "write_bytes", "export")


def model_rank(name: str) -> int:
    for i, rank in enumerate(MODEL_ORDER):
        if name in rank:
            return i
    raise AssertionError(f"msptcli/model/{name} has no place in MODEL_ORDER: add it there and to docs/architecture.md")


def model_violations(found: list[tuple[str, str, str]]) -> list[str]:
    return [
        f"{file}: {unit} imports {target}"
        for unit, target, file in found
        if unit != target and model_rank(target) >= model_rank(unit)
    ]


def test_every_model_module_has_a_rank():
    model = PACKAGE / "model"
    units = {p.name.removesuffix(".py") for p in model.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    for unit in units:
        model_rank(unit)


def test_model_modules_import_in_order():
    found = imports(PACKAGE / "model")
    assert len(found) > 30  # the check reads real imports
    assert not model_violations(found), "\n".join(model_violations(found))


def io_in(source: str, file: str) -> list[str]:
    """Imports of I/O modules and calls that write files in ``source``."""
    bad = []
    for node in ast.walk(ast.parse(source)):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        bad += [f"{file}: imports {n}" for n in names if any(n == m or n.startswith(m + ".") for m in MODEL_NO_IO)]
        if isinstance(node, ast.Call):
            f = node.func
            if (isinstance(f, ast.Name) and f.id == "open") or (isinstance(f, ast.Attribute) and f.attr in WRITES):
                bad.append(f"{file}:{node.lineno}: writes ({ast.unparse(f)})")
    return bad


def test_model_does_no_io():
    files = sorted((PACKAGE / "model").rglob("*.py"))
    assert len(files) > 10
    bad = [b for path in files for b in io_in(path.read_text(), str(path.relative_to(ROOT)))]
    assert not bad, "\n".join(bad)


def test_the_model_checks_can_fail():
    # a backbone reaching into MSPT (one rank), the building blocks into PMSA (upwards), a file written
    bad = [
        ("backbones", "mspt", "msptcli/model/backbones/nsa.py"),
        ("layers", "pmsa", "msptcli/model/layers.py"),
        ("mspt", "layers", "msptcli/model/mspt.py"),
    ]
    assert model_violations(bad) == [
        "msptcli/model/backbones/nsa.py: backbones imports mspt",
        "msptcli/model/layers.py: layers imports pmsa",
    ]
    source = "from msptcli.io.atomic import atomic_output\nimport torch\ntorch.save({}, 'x.pt')\nopen('y', 'w')\n"
    assert io_in(source, "m.py") == [
        "m.py: imports msptcli.io.atomic",
        "m.py:3: writes (torch.save)",
        "m.py:4: writes (open)",
    ]


#: docs/architecture.md "One home for each concept": each name is defined once in msptcli, in this file.
CONCEPTS = {
    "relative_l2": "msptcli/evaluate.py",
    "find_params": "msptcli/data/cases.py",
    "read_params": "msptcli/data/params.py",
    "check_outputs": "msptcli/io/guard.py",
    "cloud_inputs": "msptcli/data/features.py",
    "take_step": "msptcli/data/step.py",
    "read_pvd": "msptcli/io/pvd.py",
    "write_pvd": "msptcli/io/pvd.py",
    "outline_features": "msptcli/geometry/outline.py",
    "autocast": "msptcli/device.py",
    "ForceReference": "msptcli/physics/force_reference.py",
    "ParentRecord": "msptcli/checkpoint.py",
    "Coefficients": "msptcli/predict.py",
    "config_yaml": "msptcli/config_text.py",
}
#: Names a second copy of a concept would likely take: a definition matching one is a second home.
LOOKALIKES = (r"rel(ative)?_?l2", r"(read|load)_?params", r"(read|write|parse)_?pvd", r"relative_error")


def definitions(files: dict[str, str]) -> dict[str, list[str]]:
    """{name: [file, ...]} for every function and class defined anywhere in ``files`` {path: source}."""
    found: dict[str, list[str]] = {}
    for file, source in files.items():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                found.setdefault(node.name, []).append(file)
    return found


def second_homes(found: dict[str, list[str]]) -> list[str]:
    import re

    bad = [
        f"{name}: defined in {', '.join(found[name])}, not only in {home}"
        if name in found
        else f"{name}: not in {home}"
        for name, home in CONCEPTS.items()
        if found.get(name) != [home]
    ]
    for name, files in found.items():
        if name not in CONCEPTS and any(re.fullmatch(f"_?{p}", name, re.IGNORECASE) for p in LOOKALIKES):
            bad.append(f"{name} ({', '.join(files)}) looks like a second home of a concept in CONCEPTS")
    return bad


def test_each_concept_has_one_home():
    files = {str(p.relative_to(ROOT)): p.read_text() for p in sorted(PACKAGE.rglob("*.py"))}
    assert not second_homes(definitions(files)), "\n".join(second_homes(definitions(files)))


def test_the_concept_check_can_fail():
    files = {
        "msptcli/evaluate.py": "def relative_l2(a, b): ...\n",
        "msptcli/rollout.py": "def _rel_l2(a, b): ...\ndef relative_l2(a, b): ...\n",
    }
    bad = second_homes(definitions(files))
    assert "relative_l2: defined in msptcli/evaluate.py, msptcli/rollout.py, not only in msptcli/evaluate.py" in bad
    assert "_rel_l2 (msptcli/rollout.py) looks like a second home of a concept in CONCEPTS" in bad
    assert "read_params: not in msptcli/data/params.py" in bad
