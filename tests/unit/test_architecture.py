"""The house rules, read from the source itself: a handful of modules at the top, a stated job
per package, imports that run one way down the data flow, thin commands, one home per file
name of the run folder, keyword arguments past the third; and the tests' own rule, that
tests/unit starts no process."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "convbench"
TESTS = Path(__file__).resolve().parents[1]

# The data flow, top to bottom: a module may import only from its own place or further down.
# Packages on one line are peers and may not import each other.
LAYERS = [
    ("cli", "__main__"),
    ("commands",),
    ("tune",),
    ("analysis",),
    ("infer",),
    ("launch",),
    ("run",),
    ("engine",),
    ("config",),
    ("data", "models"),
    ("monitor",),
    ("files",),
    ("errors",),
    ("__init__",),
]
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def place(path: Path) -> str:
    """The layer name of a module: its package under convbench, or its own name at the top."""
    relative = path.relative_to(SRC)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every convbench import in the file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = (
                [node.module]
                if node.module != "convbench"
                else [f"convbench.{alias.name}" for alias in node.names]
            )
            found += [(node.lineno, name) for name in names if name.startswith("convbench")]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("convbench")]
    return found


def test_the_top_holds_a_handful_of_modules_and_every_package_says_its_job():
    top = sorted(p.name for p in SRC.glob("*.py"))
    assert len(top) <= 8, top
    for package in (p for p in SRC.iterdir() if (p / "__init__.py").is_file()):
        doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text()))
        assert doc and len(doc.split()) >= 5, f"{package.name}/__init__.py says no job"


def test_imports_run_down_the_data_flow():
    upward = []
    for path in modules():
        own = place(path)
        for line, name in imported(path):
            parts = name.split(".")
            other = parts[1] if len(parts) > 1 else "__init__"
            if other == own or other not in RANK:
                continue
            if RANK[other] <= RANK[own] and own not in ("cli", "__main__"):
                upward.append(f"{path.relative_to(SRC)}:{line} imports {name}")
    assert upward == []


def test_every_layer_is_known():
    assert {place(path) for path in modules()} <= set(RANK)


def test_commands_hold_no_state_and_leave_argv_and_the_environment_alone():
    for path in (SRC / "commands").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level: constants only (no list, dict or set to mutate)
            if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
                assert not isinstance(node.value, ast.List | ast.Dict | ast.Set | ast.Call), (
                    f"{path.name}:{node.lineno} holds module-level state"
                )
        for node in ast.walk(tree):
            text = ast.unparse(node) if isinstance(node, ast.Assign | ast.Call) else ""
            assert "sys.argv =" not in text and "os.environ[" not in text, f"{path.name}: {text}"
            assert not text.startswith(("os.environ.pop", "os.environ.update", "os.putenv")), text


def string_constants(path: Path) -> list[str]:
    """Every string literal of the code, docstrings left out (they are prose)."""
    tree = ast.parse(path.read_text())
    docs = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
    ]


@pytest.mark.parametrize(
    "name",
    ["checkpoints", "last.pt", "best.pt", "status.json", "metrics.json", ".hydra", "train.log"],
)
def test_the_run_folders_file_names_are_spelled_once(name):
    spelled = [
        f"{path.relative_to(SRC)}"
        for path in modules()
        for text in string_constants(path)
        if text == name or f"checkpoints/{name}" in text
    ]
    assert len(spelled) == 1, spelled


def takes_positionally(function: ast.FunctionDef) -> list[str]:
    arguments = function.args.posonlyargs + function.args.args
    return [a.arg for a in arguments if a.arg not in ("self", "cls")]


def test_calls_of_more_than_three_arguments_name_them():
    """Typer commands take options (they are called by Typer, with names), and hooks have the
    signature torch gives them; every other function names its arguments past the third."""
    commands = {
        "eval_",
        "compare",
        "train",
        "runs",
        "summary",
        "tb",
        "resume",
        "predict",
        "tune",
        "export",
    }
    too_many = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef) or node.name.startswith("__"):
                continue
            names = takes_positionally(node)
            is_hook = names[-3:] in (
                ["module", "inputs", "output"],
                ["module", "_inputs", "output"],
            )
            if (
                len(names) > 3
                and not is_hook
                and not (path.parent.name == "commands" and node.name in commands)
            ):
                too_many.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name}{names}")
    assert too_many == []


def test_no_formatting_is_switched_off():
    switched = [
        f"{path}:{number}"
        for root in (SRC, TESTS)
        for path in root.rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if line.rstrip().endswith("# fmt" + ": skip") or "fmt" + ": off" in line
    ]
    assert switched == []


# The tests' own tiers: tests/unit runs in this process, so `pytest tests/unit` stays quick.
PROCESS_HELPERS = {"run_cli", "start"}  # helpers.cli: `python -m convbench` as a process


def starts_processes(source: str) -> list[str]:
    """What in a test module's source reaches for a process of its own: an import of
    subprocess, helpers.cli's run_cli or start (imported, or called through the module), or
    conftest's `cli` fixture (run_cli) taken as an argument."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [
                f"{node.lineno}: import {a.name}"
                for a in node.names
                if a.name.split(".")[0] == "subprocess"
            ]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] == "subprocess":
                found.append(f"{node.lineno}: from {node.module} import ...")
            elif node.module == "helpers.cli":
                found += [
                    f"{node.lineno}: helpers.cli.{a.name}"
                    for a in node.names
                    if a.name in PROCESS_HELPERS
                ]
        elif isinstance(node, ast.Attribute) and node.attr in PROCESS_HELPERS:
            owner = ast.unparse(node.value)
            if owner in ("cli", "helpers.cli"):
                found.append(f"{node.lineno}: {owner}.{node.attr}")
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and "cli" in [
            a.arg for a in node.args.args
        ]:
            found.append(f"{node.lineno}: {node.name} takes the `cli` fixture")
    return found


def test_the_unit_tier_starts_no_process():
    offenders = {
        str(path.relative_to(TESTS)): starts_processes(path.read_text())
        for path in sorted((TESTS / "unit").rglob("*.py"))
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_tier_check_sees_what_it_looks_for():
    seen = starts_processes(
        "import subprocess\n"
        "from helpers.cli import TRUSTED, run_cli, start\n"
        "import helpers.cli\n"
        "def test_a(cli, tmp_path):\n"
        "    helpers.cli.start('train')\n"
    )
    assert sorted(seen) == [
        "1: import subprocess",
        "2: helpers.cli.run_cli",
        "2: helpers.cli.start",
        "4: test_a takes the `cli` fixture",
        "5: helpers.cli.start",
    ]
    assert any(starts_processes(path.read_text()) for path in (TESTS / "process").glob("*.py"))


def test_no_test_skips():
    """Where a test needs something (a browser, real data, root for a tmpfs), it fails and says
    what to install: a skipped test would let a broken promise pass unseen."""
    skipping = [
        f"{path.relative_to(TESTS)}:{node.lineno} {ast.unparse(node)}"
        for path in sorted(TESTS.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute)
        and node.attr in ("skip", "skipif", "importorskip")
        and ast.unparse(node.value) in ("pytest", "pytest.mark")
    ]
    assert skipping == []
