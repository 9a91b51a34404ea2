"""The package's imports run one way, as ARCHITECTURE.md draws them: no import cycle, ``networks/`` at the bottom,
and each part importing only the parts its row of ``MAY_IMPORT`` names.

Reads every module's source with ``ast`` (imports at the top and inside functions, relative ones resolved) and
imports nothing of the package's code, so it is fast and needs no data.
"""
import ast
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import pytest

import nnunet_laworder

PACKAGE = "nnunet_laworder"
ROOT = Path(nnunet_laworder.__file__).resolve().parent

# Which parts of the package each part may import besides itself: ARCHITECTURE.md's table. A part is a subpackage
# (``law``) or a top-level module (``nnunet_folders``); an entry may also name one module of a part
# (``training.discovery``) when only that one is needed.
BOTTOM = {
    "errors": set(),
    "networks": set(),
    "nnunet_folders": {"errors"},
    "conversion": {"errors", "nnunet_folders"},
    "planning": {"errors", "nnunet_folders"},
    # the trainers that draw synthetic cases with a probability read which cases are synthetic from provenance.json
    "training": {"errors", "nnunet_folders", "networks", "law.provenance"},
    # nnU-Net's predictor of a trained model, which finds the plugin's trainers through training/discovery
    "nnunet_predictor": {"errors", "training.discovery"},
    # law synthesize writes an nnU-Net raw dataset as the converters do; law evaluate and the quality gate predict
    "law": {"errors", "nnunet_folders", "networks", "conversion.common", "nnunet_predictor"},
    "evaluation": {"errors", "nnunet_folders", "networks", "planning", "training", "nnunet_predictor"},
    "workflow": {"training.discovery"},
    # export and predict load a trained fold through nnU-Net's predictor
    "deployment": {"errors", "nnunet_folders", "nnunet_predictor"},
}
MAY_IMPORT = {
    **BOTTOM,
    "demo": set(BOTTOM),  # the demo runs the whole workflow: everything but the command line
    "cli": set(BOTTOM) | {"demo"},  # `nnunet-laworder`: every part registers its subcommands here
}
# third-party packages networks/ may import besides the standard library (dynamic-network-architectures' habit)
NETWORK_LIBRARIES = {"torch", "numpy", "dynamic_network_architectures", "diffusers"}
NETWORKS_MUST_NOT_IMPORT = ("law", "training", "evaluation", "demo", "cli", "conversion", "planning")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. nnunet_laworder.law.cli
    target: str  # the imported module of the package (or the external top-level name)
    file: Path
    line: int

    def __str__(self) -> str:
        return f"{self.file.relative_to(ROOT.parent)}:{self.line}: {short(self.module)} imports {short(self.target)}"


def short(module: str) -> str:
    return module[len(PACKAGE) + 1:] if module.startswith(PACKAGE + ".") else module


def part(module: str) -> str:
    """``law`` for nnunet_laworder.law.cli, ``nnunet_folders`` for nnunet_laworder.nnunet_folders."""
    return short(module).split(".")[0]


def discover() -> Dict[str, Path]:
    modules = {}
    for file in sorted(ROOT.rglob("*.py")):
        parts = (PACKAGE, *file.relative_to(ROOT).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = file
    return modules


MODULES = discover()


def resolve(name: str) -> str:
    """The package's module that ``name`` (a module, or a name inside one) lives in: its longest module prefix."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def imports_of(module: str, file: Path) -> List[Import]:
    """Every import statement in ``file``, anywhere in it; the package's own resolved to modules, others to their
    top-level name."""
    package = module if file.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            # `from package import module` imports the module; `from module import name` imports the module
            names = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in MODULES else source
                     for alias in node.names]
        else:
            continue
        for name in names:
            own = name == PACKAGE or name.startswith(PACKAGE + ".")
            target = resolve(name) if own else name.split(".")[0]
            if target != module:
                found.append(Import(module, target, file, node.lineno))
    return found


IMPORTS = [i for module, file in MODULES.items() for i in imports_of(module, file)]
OWN_IMPORTS = [i for i in IMPORTS if i.target in MODULES]


def allowed(importer: str, target: str) -> bool:
    if part(importer) == part(target) or target == PACKAGE:
        return True
    return any(short(target) == entry or short(target).startswith(entry + ".") for entry in MAY_IMPORT[part(importer)])


def strongly_connected(graph: Dict[str, set]) -> List[List[str]]:
    """Tarjan's strongly connected components (iterative: no recursion limit)."""
    index, low, on_stack, stack, components, counter = {}, {}, set(), [], [], [0]
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
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
                    components.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter[0]
                counter[0] += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return components


def cycle_through(start: str, graph: Dict[str, set], members: set) -> List[str]:
    """One shortest path start -> ... -> start inside a strongly connected component."""
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop(0)
        for child in sorted(graph[path[-1]] & members):
            if child == start:
                return path + [start]
            if child not in seen:
                seen.add(child)
                paths.append(path + [child])
    return [start]


def test_the_package_is_found():
    assert f"{PACKAGE}.networks.order" in MODULES and f"{PACKAGE}.law.cli" in MODULES, sorted(MODULES)


def test_every_part_has_a_row():
    """A new subpackage or top-level module is placed in the table (and ARCHITECTURE.md) before it is used."""
    parts = {part(m) for m in MODULES if m != PACKAGE}
    assert parts <= set(MAY_IMPORT), f"parts without a row in MAY_IMPORT: {sorted(parts - set(MAY_IMPORT))}"


def test_no_import_cycle():
    graph = {module: set() for module in MODULES}
    where = {}
    for i in OWN_IMPORTS:
        graph[i.module].add(i.target)
        where.setdefault((i.module, i.target), i)
    cycles = []
    for component in strongly_connected(graph):
        if len(component) > 1:
            cycle = cycle_through(component[0], graph, set(component))
            steps = [str(where[a, b]) for a, b in zip(cycle, cycle[1:])]
            cycles.append(f"cycle between {', '.join(map(short, component))}:\n    " + "\n    ".join(steps))
    assert not cycles, "import cycles in the package:\n  " + "\n  ".join(cycles)


def test_networks_import_nothing_above_them():
    offending = [str(i) for i in OWN_IMPORTS if part(i.module) == "networks" and part(i.target) in
                 NETWORKS_MUST_NOT_IMPORT]
    assert not offending, "networks/ imports from above it:\n  " + "\n  ".join(offending)


def test_networks_import_only_network_libraries():
    outside = [str(i) for i in IMPORTS if part(i.module) == "networks" and i.target not in MODULES
               and i.target not in sys.stdlib_module_names and i.target not in NETWORK_LIBRARIES]
    assert not outside, (f"networks/ imports beyond the standard library and {sorted(NETWORK_LIBRARIES)}:\n  "
                         + "\n  ".join(outside))


@pytest.mark.parametrize("importer", sorted(MAY_IMPORT))
def test_layering(importer):
    offending = [f"{i}  ({importer} may import: {', '.join(sorted(MAY_IMPORT[importer])) or 'nothing of the package'})"
                 for i in OWN_IMPORTS if part(i.module) == importer and not allowed(i.module, i.target)]
    assert not offending, f"{importer} imports against ARCHITECTURE.md:\n  " + "\n  ".join(offending)
