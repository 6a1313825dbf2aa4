"""The package's layers: every import of our own code points down (docs/architecture.md draws the same order).

Imports inside functions count as much as those at module top: a lazy import only hides a cycle, it does not
remove it.
"""

import ast
import re
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "effdet_rt"

# Lowest first: one entry per top-level folder of the package (and the root modules). A module may import modules
# of its own folder or of any folder below it, so the folders form one order and no two of them import each other.
LAYERS = [
    "effdet_rt",  # the package root: only __version__
    "effdet_rt.errors",
    "effdet_rt.tasks",  # the task registry: task packages register their parts, stages look them up by name
    "effdet_rt.backends",  # the backend table: plain data the spec validates against
    "effdet_rt.detections",
    "effdet_rt.utils",
    "effdet_rt.checkpoint",
    "effdet_rt.model",
    "effdet_rt.spec",
    "effdet_rt.weights",
    "effdet_rt.data",
    "effdet_rt.evaluation",
    "effdet_rt.onnx",
    "effdet_rt.gpu",
    "effdet_rt.calib",
    "effdet_rt.engines",
    "effdet_rt.export",
    "effdet_rt.infer",
    "effdet_rt.prune",
    "effdet_rt.trainer",
    "effdet_rt.integrations",
    "effdet_rt.detection",  # the default task's parts, over the stages that run it
    "effdet_rt.classification",
    "effdet_rt.demo",
    "effdet_rt.cli",
]
ALIASES: dict[str, str] = {}


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


def module_graph(package: Path) -> dict[str, set[str]]:
    """Our modules and the modules of ours each one imports (at the top or inside a function)."""
    modules = {module_name(path): path for path in package.rglob("*.py")}
    return {name: {target for _, target in our_imports(path) if target in modules and target != name}
            for name, path in modules.items()}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one node (Tarjan): each is at least one import cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def folder_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def test_no_import_cycle_between_files():
    assert import_cycles(module_graph(PACKAGE)) == []


def test_no_import_cycle_between_top_level_folders():
    folders: dict[str, set[str]] = {}
    for module, targets in module_graph(PACKAGE).items():
        folders.setdefault(folder_of(module), set()).update(folder_of(t) for t in targets if folder_of(t) != folder_of(module))
    assert import_cycles(folders) == []


def test_the_cycle_check_sees_a_cycle_through_a_function_import(tmp_path, monkeypatch):
    fake = tmp_path / "effdet_rt"
    (fake / "spec").mkdir(parents=True)
    (fake / "spec" / "loader.py").write_text("def load():\n    from effdet_rt.spec.tf1 import convert\n")
    (fake / "spec" / "tf1.py").write_text("from effdet_rt.spec.loader import load\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert import_cycles(module_graph(fake)) == [["effdet_rt.spec.loader", "effdet_rt.spec.tf1"]]


def test_git_ignores_no_package_file():
    """A package file that .gitignore matches would be left out of commits (and out of CI's ruff)."""
    import subprocess

    files = [str(path.relative_to(PACKAGE.parent)) for path in PACKAGE.rglob("*.py")]
    done = subprocess.run(["git", "check-ignore", "--no-index", *files], cwd=PACKAGE.parent, capture_output=True,
                          text=True)
    assert done.returncode in (0, 1), done.stderr  # 1: nothing ignored; 128: not a git checkout
    assert done.stdout.split() == []


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
    folders = [layer for layer in LAYERS if (PACKAGE.parent / layer.replace(".", "/")).is_dir()][2:]  # past utils/
    ours = [layer.removeprefix("effdet_rt.") for layer in folders]  # the root modules and utils/ share a line
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


# The stages run every task through the task seam (effdet_rt/tasks.py) and do not know the classifier. These modules
# outside the task's own folder and cli/ still mention it, each for a reason:
CLASSIFIER_AWARE = {
    "effdet_rt/model/efficientnet.py",  # the ImageNet EfficientNet (its top is a classifier head) that imports check
    "effdet_rt/engines/runtime/litert.py",  # names the command that writes a classifier .tflite
    "effdet_rt/integrations/triton.py",  # Triton's own "classification extension" reads the label file
}


def classifier_aware_modules() -> set[str]:
    outside = [path for path in PACKAGE.rglob("*.py")
               if path.relative_to(PACKAGE).parts[0] not in ("classification", "cli")]
    return {str(path.relative_to(PACKAGE.parent)) for path in outside if "classif" in path.read_text().lower()}


def test_stages_do_not_know_the_classifier():
    """A new mention of classifiers in a stage is a task detail in the wrong place: move it behind the task seam
    (a part the task registers from its own task.py) rather than adding it here."""
    assert classifier_aware_modules() <= CLASSIFIER_AWARE
    assert len(CLASSIFIER_AWARE) <= 3


def test_every_task_module_registers_its_parts():
    """The task modules are found by file name: each task's answers each stage's lookup, detection (the default
    task, declared by its own package) first."""
    from effdet_rt.onnx.tasks import default_model_task, model_tasks
    from effdet_rt.spec.loader import SPEC_PART
    from effdet_rt.tasks import default_task, parts, task_packages
    from effdet_rt.weights.imported import WEIGHTS_PART

    assert task_packages() == ["classification", "detection"]
    assert default_task() == "detection" and default_model_task().noun == "detector"
    assert list(model_tasks()) == list(parts(SPEC_PART)) == ["detection", "classification"]
    assert list(parts(WEIGHTS_PART)) == ["classification"]  # a detector imports the backbone only


def fake_package(tmp_path, monkeypatch, files: dict[str, str]) -> None:
    """Point the checks at a made-up effdet_rt/ holding ``files`` ({path inside the package: text})."""
    fake = tmp_path / "effdet_rt"
    for name, text in files.items():
        (fake / name).parent.mkdir(parents=True, exist_ok=True)
        (fake / name).write_text(text)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)


def test_the_classifier_check_sees_a_stage_that_asks(tmp_path, monkeypatch):
    fake_package(tmp_path, monkeypatch, {"calib/quantize.py": "def plan(task):\n    return task == 'Classification'\n",
                                         "classification/task.py": "TASK = 'classification'\n",
                                         "cli/classification.py": ""})
    assert classifier_aware_modules() == {"effdet_rt/calib/quantize.py"}


# Places outside the task folders that still name a task (a task name as a string, or an import of a task's
# folder), each for a reason. A stage or CLI command that needs a task's answer looks the task's registered part up
# (effdet_rt/tasks.py) instead of naming the task.
TASK_NAMING = {
    "effdet_rt/cli/classification.py",  # the `effdet-rt classification` command group: that task's own verbs
    "effdet_rt/cli/main.py",  # lists the CLI modules, cli/classification.py among them
    "effdet_rt/cli/spec.py",  # `spec default --task detection`: the option's default, as users type it
    "effdet_rt/integrations/deepstream_triton.py",  # nvinferserver's own `postprocess { detection {...} }` block
}


def task_naming_places(task_names: set[str], task_folders: set[str]) -> list[str]:
    """file:line of each string equal to a task's name and each import of a task's folder, outside the task
    folders and the registry."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] in task_folders or relative == Path("tasks.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            imported = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
            if (isinstance(node, ast.Constant) and node.value in task_names) or any(
                    name.split(".")[:2] in (["effdet_rt", folder] for folder in task_folders) for name in imported):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    return found


def test_stages_name_no_task():
    """The stage packages (and the CLI commands that are no task's own) reach a task only through its registered
    parts: no task name, no import of a task's folder."""
    from effdet_rt.onnx.tasks import model_tasks
    from effdet_rt.tasks import task_packages

    places = task_naming_places(set(model_tasks()), set(task_packages()))
    assert {place.split(":")[0] for place in places} <= TASK_NAMING
    assert len(TASK_NAMING) <= 4


def test_the_task_naming_check_sees_a_stage_that_names_a_task(tmp_path, monkeypatch):
    fake_package(tmp_path, monkeypatch, {"prune/run.py": "def check(meta):\n    return meta.get('task', 'detection')\n",
                                         "export/flow.py": "from effdet_rt.detection.task import MODEL\n",
                                         "detection/task.py": "TASK = 'detection'\n",
                                         "tasks.py": "DEFAULT = 'detection'\n"})
    assert task_naming_places({"detection"}, {"detection"}) == ["effdet_rt/export/flow.py:1",
                                                               "effdet_rt/prune/run.py:2"]
