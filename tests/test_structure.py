"""The package's shape as properties: a model file is read once per run, the run options import no
engine, and no two modules import each other (directly or through others)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from mdplugin.md.options import RunOptions
from mdplugin.md.simulate import simulate

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mdplugin"
FIXTURES = ROOT / "export" / "fixtures"


@pytest.mark.parametrize("model", ["tiny.pt", "tiny-float64.pt"])  # a checkpoint and an export
def test_a_run_reads_its_model_file_once(tmp_path, model):
    """Every open of the model file during `simulate` is counted through Python's audit hook ("open"
    events cover builtins.open, io.open and Path.read_bytes); torch and OpenMM get the bytes or the
    objects made from them, never the path."""
    path = str(FIXTURES / model)
    opened = []
    counting = [True]

    def hook(event, arguments):
        if counting[0] and event == "open" and str(arguments[0]) == path:
            opened.append(arguments[1])

    sys.addaudithook(hook)  # hooks cannot be removed: switch it off below instead
    try:
        options = RunOptions(
            structure=str(FIXTURES / "water.xyz"), model=path, output=str(tmp_path / "md"), steps=4,
            report_interval=2, platform="Reference", seed=1, threads=1, progress=False,
        )  # fmt: skip
        simulate(options)
    finally:
        counting[0] = False
    assert len(opened) == 1, f"{model} opened {len(opened)} times"


def test_run_options_import_no_engine():
    """`mdplugin run --help` and option checks must not pay for importing OpenMM or torch."""
    code = "import sys, mdplugin.md.options, mdplugin.cli.run; print(sorted({'openmm', 'torch'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


def module_imports() -> dict[str, set[str]]:
    """Each mdplugin module and the mdplugin modules it imports at module level (not inside functions)."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        imported = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module)
                imported |= {f"{node.module}.{alias.name}" for alias in node.names}
        graph[name] = {target for target in imported if target.startswith("mdplugin.") and target != name}
    return {name: {t for t in targets if t in graph} for name, targets in graph.items()}


def test_no_import_circles():
    graph = module_imports()
    assert "mdplugin.md.simulate" in graph and "mdplugin.md.options" in graph  # the walk found the package
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                raise AssertionError("import circle: " + " -> ".join([*trail[trail.index(target) :], target]))
            if target not in state:
                visit(target, [*trail, target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_engine_adapters_do_not_import_the_md_application():
    """engines/ holds adapters only: they know nothing of `mdplugin run`."""
    graph = module_imports()
    for name, targets in graph.items():
        if name.startswith("mdplugin.engines"):
            assert not {t for t in targets if t.startswith(("mdplugin.md", "mdplugin.cli", "mdplugin.data"))}, name


def test_one_model_object_serves_every_python_client():
    """open_model gives the kind, typed metadata and hash once; load and the ASE calculator take the object
    and compute what they compute from the path."""
    import ase.io

    import mdplugin
    from mdplugin.engines.ase_calculator import TransformerCalculator
    from mdplugin.hashing import file_sha256

    for name, kind, local in (("tiny.pt", "checkpoint", False), ("tiny-local-float64.pt", "export", True)):
        model = mdplugin.open_model(FIXTURES / name)
        assert (model.kind, model.info.is_local) == (kind, local)
        assert model.sha256 == file_sha256(FIXTURES / name)
    model = mdplugin.open_model(FIXTURES / "tiny-float64.pt")
    water = ase.io.read(FIXTURES / "water.xyz")
    from_path = mdplugin.load(FIXTURES / "tiny-float64.pt").evaluate_atoms(water)
    assert mdplugin.load(model).evaluate_atoms(water).energy == from_path.energy
    water.calc = TransformerCalculator(model)
    assert water.get_potential_energy() == from_path.energy
