"""No import cycle anywhere in ``src/cnnzoo``, counting imports inside functions too.

A cycle hidden behind a function-level import still couples the two modules both ways; the graph is read
with ``ast`` (nothing is imported), so the test is fast and torch-free. Also: the option declarations and the
train/compare CLI modules import without torch (the CLI builds its parser from them).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = "cnnzoo"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(node: ast.ImportFrom, module: str, is_pkg: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """module -> the cnnzoo modules it imports (``from pkg import sub`` counts as importing ``pkg.sub``)."""
    files = {_module_name(p): p for p in (SRC / PKG).rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node, mod, is_pkg)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in files:  # cnnzoo.x.y where y is a name: the module cnnzoo.x
                    t = t.rpartition(".")[0]
                if t and t != mod and t.startswith(PKG):
                    graph[mod].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_no_import_cycle_in_src():
    graph = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checker_finds_a_cycle_through_a_function_level_import(tmp_path):
    g = {"cnnzoo.a": {"cnnzoo.b"}, "cnnzoo.b": {"cnnzoo.c"}, "cnnzoo.c": {"cnnzoo.a"}, "cnnzoo.d": set()}
    assert find_cycle(g) == ["cnnzoo.a", "cnnzoo.b", "cnnzoo.c", "cnnzoo.a"]
    graph = import_graph()
    assert "cnnzoo.training.loop" in graph["cnnzoo.benchmarking.core"]  # module level
    assert "cnnzoo.models.registry" in graph["cnnzoo.speed.policy"]  # inside channels_last_default


def test_options_and_train_compare_parsers_need_no_torch():
    code = ("import sys, argparse\n"
            "from cnnzoo.cli import train_cmd, compare_cmd\n"
            "p = argparse.ArgumentParser(); sub = p.add_subparsers()\n"
            "train_cmd.register(sub); compare_cmd.register(sub)\n"
            "p.parse_args(['train', '--epochs', '2']); p.parse_args(['compare', '--optimizer', 'sgd'])\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=SRC)
