"""The package's layers: every import of our own code points down (docs/architecture.md draws the same order).

Imports inside functions count as much as those at module top: a lazy import only hides a cycle, it does not
remove it.
"""

import ast
import re
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "effdet_rt"

# Lowest first. A module may import modules of its own unit or of any unit below it.
LAYERS = [
    "effdet_rt",  # the package root: only __version__
    "effdet_rt.errors",
    "effdet_rt.detections",
    "effdet_rt.utils",
    "effdet_rt.checkpoint",
    "effdet_rt.model",
    "effdet_rt.spec",
    "effdet_rt.checkpoint.formats",
    "effdet_rt.data",
    "effdet_rt.evaluation",
    "effdet_rt.onnx",
    "effdet_rt.engines.runtime",
    "effdet_rt.calib",
    "effdet_rt.engines.build",
    "effdet_rt.export",
    "effdet_rt.infer",
    "effdet_rt.prune",
    "effdet_rt.trainer",
    "effdet_rt.classification",
    "effdet_rt.integrations",
    "effdet_rt.demo",
    "effdet_rt.cli",
]
ALIASES = {"effdet_rt.engines": "effdet_rt.engines.runtime"}  # the package face hands on runtime's load()


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str:
    module = ALIASES.get(module, module)
    matches = [layer for layer in LAYERS if module == layer or module.startswith(layer + ".")]
    assert matches, f"{module} belongs to no layer: add its package to LAYERS and docs/architecture.md"
    return max(matches, key=len)


def our_imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("effdet_rt"):
            found.append((node.lineno, node.module))
            # `from effdet_rt.pkg import module` names a module as well
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names
                      if (PACKAGE.parent / f"{node.module}.{alias.name}".replace(".", "/")).with_suffix(".py").exists()]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("effdet_rt")]
    return found


def upward_imports() -> list[str]:
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = unit_of(module_name(path))
        for line, target in our_imports(path):
            imported = unit_of(target)
            if rank[imported] > rank[importer]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({importer}) imports {target} ({imported})")
    return wrong


def test_every_import_points_down():
    assert upward_imports() == []


def test_every_module_has_a_layer():
    for path in PACKAGE.rglob("*.py"):
        unit_of(module_name(path))


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The rule is not vacuous: a model module importing the trainer is reported."""
    fake = tmp_path / "effdet_rt"
    (fake / "model").mkdir(parents=True)
    (fake / "trainer").mkdir()
    (fake / "model" / "net.py").write_text("def build():\n    from effdet_rt.trainer.loop import train\n")
    (fake / "trainer" / "loop.py").write_text("from effdet_rt.model.net import build\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert upward_imports() == ["effdet_rt/model/net.py:2 (effdet_rt.model) imports effdet_rt.trainer.loop (effdet_rt.trainer)"]


def test_docs_draw_the_same_layers():
    lines = (PACKAGE.parent / "docs" / "architecture.md").read_text().splitlines()
    drawn = [line.split()[0].rstrip("/").replace("/", ".") for line in lines if re.match(r"^[a-z]+(/[a-z]+)*/ ", line)]
    ours = [layer.removeprefix("effdet_rt.") for layer in LAYERS[4:]]  # the folders; the root modules share a line
    assert drawn == ours[::-1], "docs/architecture.md lists the folders top first, in LAYERS order"


TESTS = Path(__file__).resolve().parent


def stray_test_imports() -> list[str]:
    """Imports of the tests' own code by any name but ``tests.support.<module>`` (bare sibling names and
    ``conftest`` work only under some pytest import modes, and make two spellings of one helper)."""
    local = {path.stem for path in TESTS.glob("*.py")} | {"support"}
    wrong = []
    for path in sorted(TESTS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
            for name in names:
                top = name.split(".")[0]
                if top in local or (top == "tests" and not name.startswith("tests.support")):
                    wrong.append(f"{path.relative_to(TESTS.parent)}:{node.lineno} imports {name}")
    return wrong


def test_tests_import_their_helpers_one_way():
    assert stray_test_imports() == []
    assert {path.stem for path in (TESTS / "support").glob("*.py")} >= {"data", "infer", "fake_tensorrt", "paths"}
