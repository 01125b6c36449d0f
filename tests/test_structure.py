"""The library's shape: short functions, small modules, no import circles, ruff-clean.

These are the limits the code is kept to (docs/explanation/architecture.md): no function or
method in ``hefl/``, ``transports/`` or ``protocols/`` longer than 80 lines (docstring
included), no module over 500 lines, and no circle in the graph of imports between the
library's modules. Imports under ``if TYPE_CHECKING:`` and inside functions count: a circle
that only type checking or a late import hides is still a circle a reader has to untangle.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"hefl": "hefl", "transports": "hefl.transports", "protocols": "hefl.protocols"}
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 500

pytestmark = pytest.mark.skipif(
    not all((ROOT / d / "__init__.py").is_file() for d in PACKAGES),
    reason=f"no hefl source tree at {ROOT}",
)


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package's __init__)."""
    found = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = [p for p in path.relative_to(ROOT / folder).with_suffix("").parts]
            is_init = parts[-1] == "__init__"
            dotted = ".".join([package, *(p for p in parts if p != "__init__")])
            found[dotted] = (path, is_init)
    return found


MODULES = _modules()


def _targets(module: str, is_init: bool, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The library modules an import statement loads (their nearest known ancestor)."""
    names = []
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".") if is_init else module.split(".")[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join([*package, base] if base else package)
        for alias in node.names:
            candidate = f"{base}.{alias.name}"
            if candidate in MODULES:
                names.append(candidate)
            elif not candidate.rpartition(".")[2].startswith("_c"):  # a compiled extension
                names.append(base)
    out = set()
    for name in names:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name and name != module:
            out.add(name)
    return out


def _import_graph() -> dict[str, set[str]]:
    graph = {}
    for module, (path, is_init) in MODULES.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                edges |= _targets(module, is_init, node)
        graph[module] = edges
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    circles.append(sorted(component))
    return circles


def test_no_import_circles():
    circles = _circles(_import_graph())
    assert not circles, "import circles between library modules:\n" + "\n".join(
        " <-> ".join(c) for c in circles
    )


def test_no_long_functions():
    long = []
    for path, _ in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines})")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


def test_no_long_modules():
    long = []
    for path, _ in MODULES.values():
        lines = len(path.read_text().splitlines())
        if lines > MAX_MODULE_LINES:
            long.append(f"{path.relative_to(ROOT)} ({lines})")
    assert not long, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(long)


def test_party_parameters_are_typed():
    """A parameter named ``party`` is annotated (``Party``), never ``Any`` or left bare."""
    loose = []
    for path, _ in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for arg in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]:
                    if arg.arg != "party":
                        continue
                    note = ast.unparse(arg.annotation) if arg.annotation else ""
                    if "Party" not in note:
                        loose.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not loose, "parameters named party without a Party annotation:\n" + "\n".join(loose)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", [["check"], ["format", "--check", "--diff"]])
def test_ruff(command):
    """ruff lint and format, with the project's settings, over everything in the repository."""
    pytest.importorskip("ruff")
    targets = [d for d in ("hefl", "transports", "protocols", "tests", "benchmarks")]
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", *command, *targets],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, f"ruff {' '.join(command)}:\n{proc.stdout}{proc.stderr}"
