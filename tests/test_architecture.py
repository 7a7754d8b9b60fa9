"""Which package may import which (ARCHITECTURE.md, «Import rules»), read from the source with `ast`:
every import of the product's own packages and of the HTTP libraries, at the top of a module or
inside a function. A rule broken fails here with the importing module and what it imported."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("addon", "install", "settings_ui", "worker", "devportal", "demo")
HTTP_LIBRARIES = ("requests", "fast_bitrix24", "aiohttp")


def _imports() -> dict[str, set[str]]:
    """module -> the absolute module names it imports (a relative import resolved to its package)."""
    out: dict[str, set[str]] = {}
    for top in PRODUCT:
        for path in (ROOT / top).rglob("*.py"):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            names: set[str] = set()
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names.update(a.name for a in node.names)
                elif isinstance(node, ast.ImportFrom):
                    if node.level:
                        package = module.split(".")[: -node.level or None]
                        if path.name == "__init__.py":
                            package = module.split(".")[: len(module.split(".")) - node.level + 1]
                        base = ".".join(package + ([node.module] if node.module else []))
                    else:
                        base = node.module or ""
                    names.add(base)
                    names.update(f"{base}.{a.name}" for a in node.names)
            out[module] = names
    return out


IMPORTS = _imports()


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _breaches(sources: tuple[str, ...], forbidden: tuple[str, ...], allowed: tuple[str, ...] = (),
              exempt: dict[str, str] | None = None) -> list[str]:
    found = []
    for module, names in sorted(IMPORTS.items()):
        if not any(_inside(module, s) for s in sources) or module in (exempt or {}):
            continue
        for name in sorted(names):
            if any(_inside(name, f) for f in forbidden) and not any(_inside(name, a) for a in allowed):
                found.append(f"{module} imports {name}")
    return found


def test_the_rules_are_pure():
    """addon.rules: status rules and shipped texts, pure functions: they import only each other and
    the options they read — no database, no portal, no web."""
    assert _breaches(("addon.rules",), PRODUCT, allowed=("addon.rules", "addon.options")) == []
    assert _breaches(("addon.rules",), HTTP_LIBRARIES + ("sqlalchemy", "flask")) == []


def test_only_the_adapter_speaks_http_to_bitrix24():
    """addon.bitrix is the only code that speaks Bitrix24: nothing else imports an HTTP client.
    The doctor checks our own public address (GET /healthz), not a portal."""
    exempt = {"addon.doctor.deployment": "GET of our own public /healthz"}
    assert _breaches(("addon", "install", "settings_ui", "worker"), HTTP_LIBRARIES,
                     exempt={**exempt, **{m: "" for m in IMPORTS if _inside(m, "addon.bitrix")}}) == []


def test_the_adapter_knows_nothing_of_the_product_above_it():
    """addon.bitrix may use the storage (models, db, config, the token cipher) and the pure rules, never the engine,
    the install, the pages or the worker."""
    assert _breaches(("addon.bitrix",), PRODUCT,
                     allowed=("addon.bitrix", "addon.models", "addon.db", "addon.config", "addon.crypto",
                              "addon.rules")) == []


def test_the_core_does_not_import_the_processes():
    """addon (the core) is imported by the web, the install and the worker, never the other way
    round; only the app factory (addon.web) composes the receivers and the pages."""
    composing = {"addon.web": "the app factory registers the install receiver and the settings pages",
                 "addon.cli": "the command line gathers every package's commands",
                 "addon.__main__": "python -m addon runs the command line",
                 "addon.doctor.probe": "checks the manifest the install applies"}
    assert _breaches(("addon",), ("worker", "settings_ui", "install", "devportal"), exempt=composing) == []


def test_no_product_code_imports_the_devportal():
    """The devportal is our local Bitrix24 for tests, benchmarks and the demo: the product never
    depends on it (the demo, which serves one, is the only caller)."""
    assert _breaches(("addon", "install", "settings_ui", "worker"), ("devportal",)) == []


def test_nothing_of_the_product_imports_the_demo():
    """The demo (a top-level package) runs the product with a devportal; no product package imports
    it (the command line names its command by a string, loaded only when `nezabyt demo` runs)."""
    assert _breaches(("addon", "install", "settings_ui", "worker", "devportal"), ("demo",)) == []


def test_the_pages_never_import_the_worker():
    """settings_ui queues work and reads its state through the database and the core (the what-if
    preview and re-dating in addon.dating, the worker's state in addon.worker_status)."""
    assert _breaches(("settings_ui",), ("worker",)) == []


def test_our_own_modules_are_never_imported_under_a_guard():
    """`except ImportError` around our own modules would turn a feature off silently when it breaks."""
    guarded = []
    for top in ("addon", "install", "settings_ui", "worker"):
        for path in (ROOT / top).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.Try) or not any(
                        isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                        for h in node.handlers):
                    continue
                for inner in ast.walk(ast.Module(body=node.body, type_ignores=[])):
                    if isinstance(inner, ast.ImportFrom) and (inner.module or "").split(".")[0] in PRODUCT:
                        guarded.append(f"{path.relative_to(ROOT)}: {inner.module}")
    assert guarded == []


def _cycles(modules: set[str]) -> list[list[str]]:
    """The import circles among `modules` (strongly connected groups of more than one module)."""
    graph = {m: {n if n in modules else n.rsplit(".", 1)[0] for n in IMPORTS[m]} & modules - {m} for m in modules}
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        order[v] = low[v] = len(order)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in order:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], order[w])
        if low[v] == order[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(modules):
        if v not in order:
            visit(v)
    return found


def test_the_robots_are_one_module_each_without_circles():
    """addon.robots: one module per robot, read through the registry; their modules import no circle
    among themselves, and none but the data tables grows past ~400 lines."""
    robots = {m for m in IMPORTS if _inside(m, "addon.robots")}
    assert _cycles(robots) == []
    long = {path.name: n for path in (ROOT / "addon" / "robots").glob("*.py")
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > 400}
    assert long == {}
    assert _breaches(("addon.robots",), ("worker", "settings_ui", "install", "devportal")) == []


def test_no_import_circles_anywhere():
    """No circle among all the product's modules (a module-level import or one inside a function)."""
    assert _cycles(set(IMPORTS)) == []


# Longer than ~400 lines, and why: each is a table, not logic.
DATA_TABLES = {"settings_ui/i18n.py": "the shipped texts of the pages, in two languages",
               "addon/models.py": "the schema: one class per table"}


def test_no_module_over_400_lines_but_the_data_tables():
    long = {}
    for top in PRODUCT:
        for path in (ROOT / top).rglob("*.py"):
            name = path.relative_to(ROOT).as_posix()
            if "/migrations/" in name or name in DATA_TABLES:
                continue
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > 400:
                long[name] = n
    assert long == {}
