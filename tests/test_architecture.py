"""The package structure of ARCHITECTURE.md, checked on the import graph of the source.

Every ``import`` statement in ``segcore`` counts, also those inside functions: a lazy import
still ties the two modules together.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from tests.conftest import REPO

SEGCORE = REPO / "segcore"

# Layers, lowest first: a package may import itself and packages of lower layers only.
# "base" is the top-level modules every package may use (errors, files, config I/O).
LAYERS = [
    {"base"},
    {"data", "network", "metrics"},
    {"inference"},
    {"evaluation", "slides"},
    {"bundles"},
    {"training"},
    {"analysis"},
    {"wholeslide"},
    {"batch"},  # imports Ray only inside its functions, only when a batch runs
    {"cli"},
    {"facade"},  # segcore/__init__.py: the lazy public names, for users of the library
]
LAYER_OF = {package: i for i, layer in enumerate(LAYERS) for package in layer}
BASE_MODULES = {
    "segcore.errors",
    "segcore.atomic",
    "segcore.configs",
    "segcore.paths",
    "segcore.timestamps",
    "segcore.version",
}

# Modules that import TensorFlow/Keras at import time; everything else must not.
TENSORFLOW_MODULES = {
    "segcore.network.layers",
    "segcore.network.model",
    "segcore.network.keras_metrics",
    "segcore.training.pipeline",
}
FORBIDDEN_IN_LIBRARY = ("streamlit", "appkit", "pages")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def library_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SEGCORE.rglob("*.py"))}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module ``path`` imports (absolute names; ``from pkg import mod`` resolved)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                if candidate in modules:
                    found.add(candidate)
    return found


def package_of(module: str) -> str:
    if module == "segcore":
        return "facade"
    if module in BASE_MODULES:
        return "base"
    if module == "segcore.__main__":
        return "cli"
    return module.split(".")[1]


def graph() -> dict[str, set[str]]:
    modules = library_modules()
    return {
        name: {m for m in imports_of(path, modules) if m in modules and m != name}
        for name, path in modules.items()
    }


def test_every_module_belongs_to_a_known_package():
    for name in library_modules():
        assert package_of(name) in LAYER_OF, f"{name}: a module outside the packages"


def test_packages_import_only_lower_layers():
    problems = []
    for module, targets in graph().items():
        source = package_of(module)
        for target in targets:
            if target == "segcore":  # the lazy public names: only for users, not the library
                problems.append(f"{module} imports the segcore facade")
                continue
            dest = package_of(target)
            if dest != source and LAYER_OF[dest] >= LAYER_OF[source]:
                problems.append(f"{module} ({source}) imports {target} ({dest})")
    assert not problems, "\n".join(sorted(problems))


def test_no_import_cycles_between_modules():
    edges = graph()
    state: dict[str, int] = defaultdict(int)  # 0 new, 1 on the stack, 2 done
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state[nxt] == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif state[nxt] == 0:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for start in sorted(edges):
        if state[start] == 0:
            visit(start, [start])
    assert not cycles, "\n".join(cycles)


def test_library_never_imports_the_app():
    modules = library_modules()
    for name, path in modules.items():
        for imported in imports_of(path, modules):
            assert imported.split(".")[0] not in FORBIDDEN_IN_LIBRARY, f"{name} imports {imported}"


def test_every_package_says_what_it_owns():
    for init in sorted(SEGCORE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "May import" in doc, f"{init}: the package docstring names what it may import"


def test_library_and_glue_import_without_tensorflow():
    names = sorted(set(library_modules()) - TENSORFLOW_MODULES - {"segcore.__main__"})
    names += ["appkit.charts", "appkit.navigation", "appkit.widgets", "appkit.state"]
    names += ["appkit.slides", "appkit.explorer"]  # the Slides page opens slides without TF
    code = (
        f"import importlib, sys\nfor n in {names!r}: importlib.import_module(n)\n"
        "print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_the_public_names_resolve():
    import segcore

    for name in segcore.__all__:
        assert getattr(segcore, name) is not None, name
    assert segcore.build_deeplabv3plus.__module__ == "segcore.network.model"
