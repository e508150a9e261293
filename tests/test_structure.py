"""Where code lives (docs/architecture.md): infrastructure by layer, behaviour by feature, imports point down.

The imports are read with ``ast`` (nothing is imported), at module level and inside functions alike:
an import deferred into a function still ties the two modules together.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "newsletter"
#: the layers every feature may use; they use no feature
INFRASTRUCTURE = ("core", "models", "mail", "web")
FEATURES = (
    "subscribers",
    "customers",
    "campaigns",
    "partners",
    "early_access",
    "feedback",
    "store_events",
    "admin",
)
#: the composition root: the app factory, the command line, the worker (and the old job paths)
TOP_LEVEL = {"newsletter", "__main__", "cli", "cli_support", "demo", "worker", "jobs"}


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    found = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its body."""

    def existing(dotted: str) -> str | None:
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(existing(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name if is_package else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            for alias in node.names:
                # "from a import b": module a.b if there is one, else a name defined in a
                full = f"{base}.{alias.name}"
                found.add(full if full in known else existing(base))
    found.discard(None)
    found.discard(name)
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    known = modules(root)
    return {name: imported(name, path, known) for name, path in known.items()}


def unit(module: str) -> str | None:
    """The first-level package a module belongs to; None for the top-level modules."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] not in TOP_LEVEL) else None


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = {}
    for module, deps in graph.items():
        if (source := unit(module)) is None:
            continue
        targets = packages.setdefault(source, set())
        targets.update(t for t in map(unit, deps) if t is not None and t != source)
    return packages


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for target in edges:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph.get(target, ())))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
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
                        found.append(sorted(component))
    return sorted(found)


def _describe(components: list[list[str]]) -> str:
    return "\n".join("  " + " <-> ".join(c) for c in components)


def test_the_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_reader_sees_deferred_and_relative_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from pkg.c import thing\n")
    (pkg / "c.py").write_text("from pkg.sub import b\nthing = 1\n")
    graph = import_graph(pkg)
    assert graph["pkg.sub"] == {"pkg.sub.b"}
    assert graph["pkg.sub.b"] == {"pkg.c"}
    assert graph["pkg.c"] == {"pkg.sub.b"}
    assert cycles(graph) == [["pkg.c", "pkg.sub.b"]]


def test_no_import_cycles_between_modules():
    found = cycles(import_graph())
    assert not found, "import cycles among newsletter's modules:\n" + _describe(found)


def test_no_import_cycles_between_packages():
    packages = package_graph(import_graph())
    found = cycles(packages)
    assert not found, "packages importing each other (one of them must point down only):\n" + _describe(found)


def test_core_models_mail_and_web_import_no_feature():
    wrong = []
    for module, deps in sorted(import_graph().items()):
        layer = unit(module)
        if layer not in INFRASTRUCTURE:
            continue
        for dep in sorted(deps):
            target = unit(dep)
            if target is None or target in FEATURES or (layer == "core" and target != "core"):
                wrong.append(f"  {module} imports {dep}")
    assert not wrong, "infrastructure importing upwards (core imports only core):\n" + "\n".join(wrong)


def test_every_module_lives_in_a_layer_or_a_feature():
    allowed = set(INFRASTRUCTURE) | set(FEATURES) | {"migrations"}
    # a top-level module not in TOP_LEVEL counts as a package of its own, and is refused here
    stray = sorted(m for m in modules() if unit(m) is not None and unit(m) not in allowed)
    assert not stray, f"modules outside the layers {INFRASTRUCTURE} and features {FEATURES}: {stray}"


def test_jobs_queued_before_the_move_still_find_their_functions():
    from rq.utils import import_attribute

    from newsletter.campaigns import jobs as campaign_jobs
    from newsletter.subscribers import jobs as outbox_jobs

    for path, function in {
        "newsletter.jobs.send_batch": campaign_jobs.send_batch,
        "newsletter.jobs.tick": campaign_jobs.tick,
        "newsletter.jobs.deliver_transactional": outbox_jobs.deliver_transactional,
        "newsletter.jobs.sweep_outbox": outbox_jobs.sweep_outbox,
    }.items():
        assert import_attribute(path) is function


def test_the_per_dialect_insert_is_chosen_in_one_place():
    """ON CONFLICT needs the dialect's own insert(); core.db.dialect_insert picks it for everyone."""

    def names(node: ast.AST) -> list[str]:
        if isinstance(node, ast.ImportFrom):
            return [node.module or ""]
        return [alias.name for alias in node.names] if isinstance(node, ast.Import) else []

    users = sorted(
        module
        for module, path in modules().items()
        if any(
            name.startswith("sqlalchemy.dialects")
            for node in ast.walk(ast.parse(path.read_text("utf-8")))
            for name in names(node)
        )
    )
    assert users == ["newsletter.core.db"]
