"""The package's shape: stages import only the stages below them, no module imports itself in a loop, ruff is clean."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "simsearch"

# Bottom to top. A module may import its own stage and any stage listed before it, never one after it.
# errors / files / vectors are shared leaves; "simsearch" is the package face (lazy public names) and __main__.
STAGES = ["errors", "files", "vectors", "audio", "encoders", "store", "indexing", "search", "classify", "evaluation",
          "app", "cli", "indexer", "simsearch", "__main__"]
# What each shared leaf and the audio stage may use of ours, beyond themselves.
ONLY = {"errors": set(), "files": set(), "vectors": set(), "audio": {"errors"}}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "simsearch"


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """Every simsearch module this file imports, at the top or inside functions; type-checking-only imports aside."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for n in ast.walk(node)}
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.add(full if full in modules else base)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return {m for m in out if m in modules and m != me}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: imported_modules(p, set(files)) for m, p in files.items()}


def test_every_stage_is_known(graph):
    assert {stage(m) for m in graph} <= set(STAGES)


def test_no_upward_imports(graph):
    rank = {s: i for i, s in enumerate(STAGES)}
    bad = [f"{m} -> {t}" for m, targets in graph.items() for t in targets
           if rank[stage(t)] > rank[stage(m)]
           or (stage(m) in ONLY and stage(t) != stage(m) and stage(t) not in ONLY[stage(m)])]
    assert not bad, "imports that go up the stages:\n" + "\n".join(sorted(bad))


def test_no_import_cycles(graph):
    cycles, done, stack = [], set(), []

    def visit(m: str) -> None:
        stack.append(m)
        for t in sorted(graph[m]):
            if t in stack:
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in done:
                visit(t)
        stack.pop()
        done.add(m)

    for m in sorted(graph):
        if m not in done:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_encoders_never_reach_search_store_or_app(graph):
    bad = [f"{m} -> {t}" for m, ts in graph.items() if stage(m) == "encoders" for t in ts
           if stage(t) in {"store", "search", "app", "indexing", "classify", "evaluation", "cli"}]
    assert not bad


def test_ruff_is_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (it comes with the test extra)")
    root = PACKAGE.parent
    r = subprocess.run([ruff, "check", "--no-cache", "simsearch", "tests", "scripts", "app.py"], cwd=root,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
