"""The shape of the code: the import rules of DESIGN.md, a store that leaks nothing, tests that
reach no private name of another module, and a README tree that names every module.

The stages in the order of DESIGN.md's table: fetch, parse, store, classify, compose, render,
archive, deliver. A stage may import the shared modules and the stages before it, never a later
stage, nor the top (app, schedule, cli…), which calls them.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "pipeline"

STAGES = ("fetch", "parse", "store", "classify", "compose", "render", "archive", "deliver")
# Usable by every stage: typed records, errors, the one lock, the one text pass, configuration.
SHARED = ("models", "errors", "lock", "text", "config", "pool")
# The top: what people and machines run. They call the app (and the stages' records); no stage
# calls them. `fetchreport` is the terminal's view of a fetch, used by the CLI only.
TOP = ("app", "cadence", "schedule", "cli", "fetchreport", "serve", "desk", "worker", "__main__")
# config reads topics.yaml into classify's rule language (classify.rules, with its normalisation):
# the one place a shared module reads a stage, and it reads values, not the engine.
ALLOWED = {("config", "pipeline.classify.rules"), ("config", "pipeline.classify.normalize")}


def component(module: str) -> str:
    """`pipeline.store.sqlite.base` -> `store`; `pipeline` itself (its version) is shared."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(REPO).with_suffix("")
        parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
        yield ".".join(parts), path


def imports(module: str, path: Path) -> set[str]:
    """Every pipeline module it imports, wherever the import stands (a lazy import is a dependency too)."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pipeline import app`
    return {name for name in found if name == "pipeline" or name.startswith("pipeline.")}


def existing(name: str) -> bool:
    relative = Path(*name.split("."))
    return (REPO / relative).with_suffix(".py").is_file() or (REPO / relative / "__init__.py").is_file()


def rank(name: str) -> int:
    return STAGES.index(name)


def test_every_module_has_a_place() -> None:
    placed = set(STAGES) | set(SHARED) | set(TOP) | {"__init__"}
    unplaced = sorted({component(module) for module, _ in modules()} - placed)
    assert not unplaced, f"add {unplaced} to STAGES, SHARED or TOP in {Path(__file__).name} (and to DESIGN.md)"


def test_no_stage_imports_a_later_stage_or_the_top() -> None:
    broken: list[str] = []
    for module, path in modules():
        mine = component(module)
        for name in imports(module, path):
            if not existing(name) or name == "pipeline":
                continue  # `from pipeline.x import Name`: the module is pipeline.x
            theirs = component(name)
            if theirs == mine or theirs == "__init__" or (mine, name) in ALLOWED:
                continue
            if mine in TOP:
                continue  # the top may call anything below it (and other top modules)
            if theirs in TOP:
                broken.append(f"{module} imports {name}: only the top calls {theirs}")
            elif mine in SHARED and theirs in STAGES:
                broken.append(f"{module} imports {name}: a shared module imports no stage")
            elif mine in STAGES and theirs in STAGES and rank(theirs) > rank(mine):
                broken.append(f"{module} imports {name}: {mine} comes before {theirs} in the flow")
    assert not broken, "\n".join(broken)


def test_the_rules_see_real_breaks(tmp_path: Path) -> None:
    """The checker itself: a relative import resolves, and a later stage is named as such."""
    path = tmp_path / "store.py"
    path.write_text("from .deliver import send\nimport pipeline.app\nfrom pipeline.models import Item\n")
    assert imports("pipeline.store", path) == {"pipeline.deliver", "pipeline.deliver.send", "pipeline.app",
                                               "pipeline.models", "pipeline.models.Item"}
    assert rank("store") < rank("deliver") and component("pipeline.deliver.send") == "deliver"


def test_no_backend_type_or_sql_leaves_the_store() -> None:
    for module, path in modules():
        if component(module) == "store":
            continue
        found = imports(module, path)
        text = path.read_text(encoding="utf-8")
        assert not {n for n in found if n.startswith("pipeline.store.sqlite")}, f"{module} reaches into a backend"
        assert not re.search(r"^\s*(import sqlite3|from sqlite3 )", text, re.M), f"{module} imports sqlite3"
        assert not re.search(r"\b(SELECT|INSERT|UPDATE|DELETE)\b[^\n]*\b(FROM|INTO|SET)\b", text), \
            f"{module} holds SQL"


# The command line's one way into the pipeline: the app (and the configuration it is made from,
# and the errors it raises), beside the other entry points it starts (the scheduler, the workers,
# the servers) and the terminal's view of a fetch. No stage, no store, no record module.
CLI_MAY_IMPORT = ("app", "config", "errors", "__init__", "schedule", "worker", "serve", "desk", "fetchreport")


def test_the_cli_reaches_the_stages_only_through_the_app() -> None:
    path = PACKAGE / "cli.py"
    reached = sorted(name for name in imports("pipeline.cli", path)
                     if existing(name) and component(name) not in CLI_MAY_IMPORT)
    assert not reached, f"pipeline/cli.py imports {reached}: offer what it needs in pipeline/app.py"


def test_the_cli_rule_sees_a_stage(tmp_path: Path) -> None:
    path = tmp_path / "cli.py"
    path.write_text("def f():\n    from pipeline.render import french_date\n    from pipeline.app import Pipeline\n")
    found = {name for name in imports("pipeline.cli", path) if existing(name)}
    assert {component(name) for name in found} - set(CLI_MAY_IMPORT) == {"render"}


def test_deliver_composes_nothing_and_reads_no_app() -> None:
    for module, path in modules():
        if component(module) == "deliver":
            assert not {n for n in imports(module, path) if component(n) in ("compose", "app")}, module


# ---------------------------------------------------------------- tests reach no private name


def private_reaches(path: Path) -> Iterator[str]:
    """`module._name`, `obj._name` (but self/cls) and `from x import _name` in a test file, in line order."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in sorted(ast.walk(tree), key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", 0))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipeline"):
            for alias in node.names:
                if alias.name.startswith("_"):
                    yield f"{path.name}:{node.lineno}: from {node.module} import {alias.name}"
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            yield f"{path.name}:{node.lineno}: {ast.unparse(node)}"
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                re.fullmatch(r"pipeline(\.\w+)*\._\w+", node.value):  # monkeypatch.setattr("pipeline.x._y", …)
            yield f"{path.name}:{node.lineno}: {node.value}"


def test_tests_reach_no_private_name_of_another_module() -> None:
    reaches = [reach for path in sorted((REPO / "tests").glob("*.py")) if path.name != Path(__file__).name
               for reach in private_reaches(path)]
    assert not reaches, "tests must use public names:\n" + "\n".join(reaches)


def test_the_private_check_sees_what_it_should(tmp_path: Path) -> None:
    sample = tmp_path / "test_sample.py"
    sample.write_text("from pipeline.app import _sha\nimport pipeline.app as app\n"
                      "class T:\n    def m(self):\n        return self._x, app._store, '_not_a_path'\n"
                      "x = 'pipeline.app._sha'\n")
    assert [r.split(": ", 1)[1] for r in private_reaches(sample)] == [
        "from pipeline.app import _sha", "app._store", "pipeline.app._sha"]


# ---------------------------------------------------------------- the README tree


def readme_tree() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## Layout of the code\n.*?```text\n(.*?)```", readme, re.S | re.M)
    assert match, "README has no tree in 'Layout of the code'"
    return match.group(1)


def test_the_readme_tree_names_every_module() -> None:
    tree = readme_tree()
    named = set(re.findall(r"([\w.]+(?:/|\.py|\.c))\s", tree + "\n"))
    files = [p for p in PACKAGE.rglob("*") if p.suffix in (".py", ".c") and p.name != "__init__.py"
             and "__pycache__" not in p.parts]
    missing = sorted(str(p.relative_to(PACKAGE)) for p in files if p.name not in named)
    missing += sorted(f"{p.relative_to(PACKAGE)}/" for p in PACKAGE.rglob("*")
                      if p.is_dir() and (p / "__init__.py").is_file() and f"{p.name}/" not in named)
    assert not missing, f"README 'Layout of the code' does not name: {missing}"
    gone = sorted(name for name in named if name.endswith((".py", ".c"))
                  and not any(p.name == name for p in files) and name != "__main__.py")
    assert not gone, f"README 'Layout of the code' names modules that do not exist: {gone}"


# ---------------------------------------------------------------- the order comes from DESIGN.md


def test_the_stage_order_is_design_md_s(shared: Path) -> None:
    design = (shared / "DESIGN.md").read_text(encoding="utf-8")
    table = re.findall(r"^\| `([\w /`]+)` (?:\(package\) )?\|", design, re.M)
    rows = [name.strip("`").split("` / `")[0] for name in table]
    assert [row for row in rows if row in STAGES] == list(STAGES)
    placed = set(STAGES) | set(SHARED) | set(TOP)
    assert all(row.split(" ")[0] in placed for row in rows), rows


@pytest.mark.parametrize("name", STAGES)
def test_every_stage_exists(name: str) -> None:
    assert existing(f"pipeline.{name}")
