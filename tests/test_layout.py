"""The shape of the package, checked: layers that only import downwards, no import circles,
no tier asked for by name outside the store, modules a reader can hold.

Read from the source with ``ast`` (nothing is imported): an import counts wherever it is,
in a function too, unless it sits under ``if TYPE_CHECKING:`` (annotations only).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import imgcache

ROOT = Path(imgcache.__file__).parent
LAYERS = (
    ("foundation", {"imgcache._vocabulary", "imgcache.errors", "imgcache._limits", "imgcache._memo",
                    "imgcache._files", "imgcache._config", "imgcache._quiet", "imgcache._lazy",
                    "imgcache.normalize", "imgcache.codec", "imgcache.pricing", "imgcache.manifest",
                    "imgcache.stats", "imgcache.fetch", "imgcache.request",
                    "imgcache.spend.config", "imgcache.spend.limiter"}),  # limits: configuration, arithmetic
    ("storage and matching", {"imgcache.store", "imgcache.match", "imgcache.images", "imgcache.invalidation",
                              "imgcache.flight", "imgcache.request_log",
                              "imgcache.testing"}),  # fakes, servers and the tier contract
    ("the front's parts", {"imgcache._lookup", "imgcache._calls", "imgcache.spend"}),
    ("the front", {"imgcache.cache"}),
    ("adapters", {"imgcache.adapters"}),
    ("proxy and prewarm", {"imgcache.proxy", "imgcache.prewarm"}),
    ("command line", {"imgcache.cli"}),
)
UPWARD_ALLOWED = {("imgcache.cache", "imgcache.adapters.decorator")}
"""``Cache.cached`` builds the decorator: the front's one convenience that reaches an adapter
(the decorator itself needs the front only for annotations, so there is no circle)."""
TIER_NAMES = {"memory", "disk", "redis", "s3"}
MAX_LINES = 600


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def runtime_imports(name: str) -> set[str]:
    """The imgcache modules ``name`` imports outside ``if TYPE_CHECKING:`` blocks."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for statement in child.orelse:
                    visit(statement)
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - child.level + 1] if child.level else []
                source = ".".join([*base, *([child.module] if child.module else [])])
                for alias in child.names:  # ``from . import x``: the module x if it is one
                    found.add(f"{source}.{alias.name}" if f"{source}.{alias.name}" in MODULES else source)
            visit(child)

    visit(ast.parse(path.read_text()))
    return {module for module in found if module in MODULES and module not in (name, "imgcache")}


def layer_of(name: str) -> int:
    for index, (_, members) in enumerate(LAYERS):
        if any(name == member or name.startswith(member + ".") for member in members):
            return index
    raise AssertionError(f"{name} is in no layer: place it in LAYERS")


GRAPH = {name: runtime_imports(name) for name in MODULES if name != "imgcache"}


def test_every_module_is_in_a_layer_and_imports_only_downwards() -> None:
    upward = [(name, target) for name, targets in GRAPH.items() for target in targets
              if layer_of(target) > layer_of(name) and (name, target) not in UPWARD_ALLOWED]
    assert upward == [], "imports of a higher layer: " + ", ".join(f"{a} -> {b}" for a, b in upward)


def test_nothing_below_the_front_imports_the_front_or_what_stands_on_it() -> None:
    front = layer_of("imgcache.cache")
    below = [name for name in GRAPH if layer_of(name) < front]
    assert below and not [(name, target) for name in below for target in GRAPH[name] if layer_of(target) >= front]


def test_there_are_no_import_circles() -> None:
    """Tarjan's strongly connected components: every one must be a single module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def connect(node: str) -> None:  # the graph is a few hundred modules: recursion is fine
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH.get(node, ()):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in GRAPH:
        if node not in index:
            connect(node)
    assert circles == []


def test_no_tier_is_asked_for_by_name_outside_the_store() -> None:
    """Capabilities are declared (see imgcache.store.base); nothing above the store picks a
    tier by its name, its client or its root, or imports a tier module."""
    found = []
    for name, path in MODULES.items():
        if name.startswith(("imgcache.store", "imgcache.testing")):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            line = f"{name}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Attribute) and node.attr in ("available", "shared_store", "client", "root"):
                owner = ast.unparse(node.value)
                if any(word in owner for word in ("tier", "store", "redis", "disk", "s3")):
                    found.append(f"{line} {ast.unparse(node)}")
            elif isinstance(node, ast.Compare) and any(
                    isinstance(side, ast.Constant) and side.value in TIER_NAMES for side in [node.left, *node.comparators]
            ) and ".name" in ast.unparse(node):
                found.append(f"{line} {ast.unparse(node)}")
        found += [f"{name} imports {target}" for target in GRAPH.get(name, ())
                  if target in ("imgcache.store.disk", "imgcache.store.redis", "imgcache.store.s3",
                                "imgcache.store.memory")]
    assert found == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_small(name: str) -> None:
    lines = len(MODULES[name].read_text().splitlines())
    assert lines < MAX_LINES, f"{name}: {lines} lines"


def test_the_front_is_thin() -> None:
    assert len(MODULES["imgcache.cache"].read_text().splitlines()) <= 450
