"""The layer rule of docs/architecture.md, checked on the source: every import points down, commands stand alone."""

from __future__ import annotations

import ast

from helpers import ROOT

PACKAGE = ROOT / "msptcli"

#: Top-level modules and packages of msptcli, lowest layer first (docs/architecture.md).
LAYERS = [
    {"__init__", "errors", "choices"},
    {"io", "geometry", "device"},
    {"physics", "model"},
    {"config"},
    {"data"},
    {"checkpoint", "evaluate", "options"},
    {"prepare", "train", "predict", "rollout", "export", "balltree"},
    {"cli", "cli_options", "cli_output", "__main__"},
]
COMMANDS = LAYERS[-2]


def layer_of(name: str) -> int:
    for i, layer in enumerate(LAYERS):
        if name in layer:
            return i
    raise AssertionError(f"msptcli/{name} is in no layer of docs/architecture.md: add it there and here")


def imports() -> list[tuple[str, str, str]]:
    """(importing top-level unit, imported top-level unit, file) for every msptcli import in the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        unit = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if name.startswith("msptcli.") or name == "msptcli":
                    target = name.split(".")[1] if "." in name else "__init__"
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
