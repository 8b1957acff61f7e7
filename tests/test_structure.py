"""The packages' structure, read from the source (every import, function-local ones included): no
package imports another's private names, no import loop runs through two packages, and no module
is over 400 lines. An exception stands only where docs/design.md explains it, one bullet each,
under its final section "Exceptions to the structure checks"; a bullet nothing needs fails too."""

import ast
import re
import tomllib
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"
SECTION = "## Exceptions to the structure checks"
MAX_LINES = 400
# the engine's layers: among them, package to package, the imports run one way only
LAYERS = ("theorycraft.spec", "theorycraft.inference.kinds", "theorycraft.inference", "theorycraft.scoring",
          "theorycraft.refine", "theorycraft.targets")


@lru_cache(maxsize=None)
def layout() -> tuple[dict, tuple]:
    """(folder -> the package it installs as, every package), from pyproject.toml."""
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return tool["package-dir"], tuple(tool["packages"])


@lru_cache(maxsize=None)
def modules() -> dict[str, tuple[Path, bool]]:
    """Every module of the library (scripts in a package's folders included): name -> (file, is a package)."""
    out = {}
    for package, folder in layout()[0].items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = [p for p in path.relative_to(ROOT / folder).with_suffix("").parts if p != "__init__"]
            out[".".join([package, *parts])] = (path, path.name == "__init__.py")
    return out


def package_of(module: str) -> str:
    return max((p for p in layout()[1] if module == p or module.startswith(p + ".")), key=len)


def imports(module: str):
    """(line, imported module, imported name or None) for every import in ``module``, relative
    ones resolved, function-local ones included; only the library's own."""
    path, is_package = modules()[module]
    yield from imports_in(path.read_text(), module, is_package)


def imports_in(text: str, module: str, is_package: bool = False):
    here = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            found = [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(here[:len(here) - node.level + 1] + [node.module or ""]).strip(".") if node.level else node.module
            found = [(base, alias.name) for alias in node.names]
        else:
            continue
        for target, name in found:
            if target == "theorycraft" or target.startswith("theorycraft."):
                yield node.lineno, target, name


def private_part(target: str, name: str | None) -> str | None:
    """The private module or name an import reaches into, past its package; None if it reaches none."""
    parts = target[len(package_of(target)):].strip(".").split(".")
    for k, part in enumerate(parts):
        if part.startswith("_"):
            return ".".join([package_of(target), *parts[:k + 1]])
    return f"{target}.{name}" if name and name.startswith("_") else None


def private_imports() -> dict[str, set[str]]:
    """'importer → private module or name' -> where (file:line), across packages."""
    out: dict[str, set[str]] = {}
    for module, (path, _) in modules().items():
        for line, target, name in imports(module):
            private = private_part(target, name)
            if private and package_of(target) != package_of(module):
                out.setdefault(f"{module} → {private}", set()).add(f"{path.relative_to(ROOT)}:{line}")
    return out


def long_modules() -> dict[str, int]:
    return {m: n for m, (path, _) in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}


def graph() -> dict[str, set[str]]:
    """module -> the library modules it imports (``from P import m`` of a submodule: P.m)."""
    out = {}
    for module in modules():
        out[module] = {f"{t}.{n}" if f"{t}.{n}" in modules() else t for _, t, n in imports(module)} & set(modules())
    return out


def loops(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan's algorithm, iterative)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def exceptions() -> tuple[dict[str, str], dict[str, str]]:
    """(long modules, private imports) that docs/design.md's last section explains: entry -> why."""
    text = DESIGN.read_text()
    assert SECTION in text, f"{DESIGN}: expected a section '{SECTION}'"
    section = text.split(SECTION, 1)[1]
    assert not re.search(r"^#{1,2} ", section, re.M), f"{DESIGN}: expected '{SECTION}' to be the last section"
    long, private = {}, {}
    for line in re.findall(r"^- (.*)$", section, re.M):
        entry = re.match(r"`([\w.]+)`(?: → `([\w.]+)`)?(?: \([^)]*\))?: (.*)", line)
        assert entry and len(entry[3].split()) >= 4, f"{DESIGN}: expected '- `module`: why' or " \
            f"'- `importer` → `private name`: why' (a reason of a few words), found '- {line}'"
        if entry[2]:
            private[f"{entry[1]} → {entry[2]}"] = entry[3]
        else:
            long[entry[1]] = entry[3]
    return long, private


def test_the_scan_sees_every_kind_of_import():
    text = ("import theorycraft.store\nfrom . import _stream\nfrom ..kinds import kind_of\n"
            "def late():\n    from theorycraft.spec._model import Name\n")
    assert list(imports_in(text, "theorycraft.inference.kinds.linear")) == [
        (1, "theorycraft.store", None), (2, "theorycraft.inference.kinds", "_stream"),
        (3, "theorycraft.inference.kinds", "kind_of"), (5, "theorycraft.spec._model", "Name")]
    assert private_part("theorycraft.inference._fit", "fit") == "theorycraft.inference._fit"
    assert private_part("theorycraft.inference", "_distributed") == "theorycraft.inference._distributed"
    assert private_part("theorycraft.inference.engine", "fit") is None
    assert loops({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_package_imports_another_package_s_private_names():
    found = private_imports()
    unexplained = {k: v for k, v in found.items() if k not in exceptions()[1]}
    assert not unexplained, "private names of another package (import the package's public names instead, " \
        "e.g. theorycraft.inference.engine; or explain the exception in docs/design.md):\n" + \
        "\n".join(f"  {k}  ({', '.join(sorted(v))})" for k, v in sorted(unexplained.items()))


def test_no_module_is_over_400_lines_unexplained():
    unexplained = {m: n for m, n in long_modules().items() if m not in exceptions()[0]}
    assert not unexplained, f"modules over {MAX_LINES} lines (split them, or explain why in docs/design.md): " + \
        ", ".join(f"{m} ({n} lines)" for m, n in sorted(unexplained.items()))


def test_every_exception_is_still_needed():
    long, private = exceptions()
    stale = sorted(set(long) - set(long_modules())) + sorted(set(private) - set(private_imports()))
    assert not stale, f"explained in docs/design.md but no longer over {MAX_LINES} lines or no longer imported " \
        f"(delete the bullet): {stale}"


def test_no_import_loop_runs_through_two_packages():
    crossing = [loop for loop in loops(graph()) if len({package_of(m) for m in loop}) > 1]
    assert not crossing, "import loops through several packages (function-local imports count):\n" + \
        "\n".join("  " + " ↔ ".join(loop) for loop in crossing)


def test_the_engine_s_layers_import_one_way():
    between = {}
    for module, targets in graph().items():
        for target in targets:
            a, b = package_of(module), package_of(target)
            if a != b and a in LAYERS and b in LAYERS:
                between.setdefault(a, set()).add(b)
    assert not loops(between), f"packages that import each other: {loops(between)}"
