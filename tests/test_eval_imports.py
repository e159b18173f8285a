"""eval/*.py import each other in one direction only: no cycle, counting imports inside functions
and under `if TYPE_CHECKING:` (a function-local import that dodges a cycle at run time is still one)."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

EVAL = REPO / "eval"


def eval_imports(path: Path) -> set[str]:
    """Names of the `eval` modules (file stems) that the module at `path` imports, anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "eval" if node.level else (node.module or "")  # `from . import x` is inside eval
            module = f"eval.{node.module}" if node.level and node.module else base
            # `from eval import runner` names a module; `from eval.runner import x` names its module
            targets = [f"{module}.{a.name}" for a in node.names] if module == "eval" else [module]
        else:
            continue
        for target in targets:
            parts = target.split(".")
            if parts[0] == "eval" and len(parts) > 1 and (EVAL / f"{parts[1]}.py").is_file():
                found.add(parts[1])
    found.discard(path.stem)
    return found


def import_graph() -> dict[str, set[str]]:
    return {path.stem: eval_imports(path) for path in sorted(EVAL.glob("*.py"))}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as [a, b, ..., a], or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_eval_modules_import_without_cycles() -> None:
    graph = import_graph()
    assert {"runner", "scoring", "report_data", "report", "dataset", "table"} <= set(graph)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


#: Top to bottom, as eval/__init__.py lists them: a module imports only modules after it.
ORDER = ("__init__", "__main__", "cli", "server", "jobs", "job_process", "zips", "limits", "runner",
         "report_data", "report", "scoring", "dataset", "table")


def test_layers_point_down() -> None:
    graph = import_graph()
    assert set(graph) == set(ORDER), "a new eval module: give it its place in ORDER"
    upward = [(a, b) for a, targets in graph.items() for b in targets if ORDER.index(b) <= ORDER.index(a)]
    assert not upward, f"imports up the layers: {upward}"
    assert {"scoring", "report_data"} <= graph["runner"]  # the runner orchestrates


def test_the_checker_sees_function_local_and_type_checking_imports(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("from eval.runner import evaluate\n")
    (tmp_path / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from eval.scoring import Evidence\n"
        "def f():\n    from eval import report\n    import eval.table as t\n    from . import jobs\n")
    assert eval_imports(tmp_path / "a.py") == {"runner"}
    assert eval_imports(tmp_path / "b.py") == {"scoring", "report", "table", "jobs"}
    # the cycle the modules had before: scoring -> runner (open_dataset) -> scoring (score), and
    # scoring -> report_data -> scoring (LABELS), each through imports inside functions
    old = {"runner": {"scoring", "table"}, "scoring": {"runner", "report_data", "table"},
           "report_data": {"report", "scoring", "table"}, "report": set(), "table": set()}
    assert find_cycle(old) in (["report_data", "scoring", "report_data"], ["runner", "scoring", "runner"])
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
