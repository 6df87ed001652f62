"""The layers of service/ and what each may import, read from the source (AST), and no import cycles.

An import inside a function counts like one at the top: a cycle hidden in a function is still a cycle
in the design. Only imports under `if TYPE_CHECKING:` are left out (they never run).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ROOT / "service"

# Which layers a layer may import (itself always). The composition root (server, cli) wires them all.
ALLOWED: dict[str, set[str]] = {
    "domain": set(),
    "db": {"sql", "migrations", "config"},
    "payments": {"domain", "config"},
    "app": {"domain", "db", "payments", "config"},
    "recharge": {"domain", "db", "app", "payments", "config", "metrics"},
    "webhooks": {"domain", "db", "app", "config", "metrics"},
    "api": {"domain", "db", "app", "payments", "config", "metrics", "tracing"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports_of(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if _type_checking_only(node, parents):
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target
            # `from service.app import rows` imports the module service.app.rows.
            for alias in node.names:
                yield f"{target}.{alias.name}"


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in SERVICE.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges[name] = {target for target in imports_of(path) if target in modules and target != name}
    return edges


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_service_has_no_import_cycles() -> None:
    edges = graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    assert not cycles, "import cycles in service/:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_each_layer_imports_only_the_layers_below_it() -> None:
    broken = []
    for module, targets in graph().items():
        allowed = ALLOWED.get(layer(module))
        if allowed is None:
            continue  # the composition root and process-wide modules (server, cli, config, logs...)
        for target in targets:
            target_layer = layer(target)
            if target_layer != layer(module) and target_layer not in allowed:
                broken.append(f"{module} imports {target}")
    assert not broken, "layer rules broken:\n" + "\n".join(sorted(broken))


def test_the_domain_does_no_io() -> None:
    io = {"asyncpg", "grpc", "stripe", "aiohttp", "httpx", "structlog", "consofta", "google"}
    found = [
        f"{module_name(p)} imports {name}"
        for p in (SERVICE / "domain").rglob("*.py")
        for name in imports_of(p)
        if name.split(".")[0] in io
    ]
    assert not found, "\n".join(found)
