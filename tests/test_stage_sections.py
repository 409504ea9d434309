"""Every params section a DVC stage reads is in its effective file (``STAGE_SECTIONS``).

``build/params/<stage>.json`` holds exactly the sections ``STAGE_SECTIONS[stage]`` names, and DVC reruns a
stage only when that file changes; a section a stage reads without declaring it can change without the
stage rerunning (``distill`` read ``evaluate.threshold_rule`` this way).

How the reads are found: a static data-flow scan (``ast``) of the stage's code, following the config
object through the calls it is passed to, into the pipelines helpers and the covidscan library:

* In ``pipelines/<stage>.py::main`` the config is the name ``params`` (every stage's convention).
* ``<config>.<section>`` is a read of that section (also on the result of a call the config was passed
  to, e.g. ``tuned_params(params, t).train``). ``model_copy`` is not a read; serialising the whole config
  (``model_dump*``) reads every section and is allowed only where :data:`WHOLE_CONFIG_OK` says why;
  ``run.experiment_name`` (where MLflow files the run) is bookkeeping, not a read (:data:`NOT_AN_OUTPUT`).
* Names assigned the config, or a call annotated ``-> Params`` that was passed it, carry it too; a
  config stored on ``self`` is followed into every method of the class.
* Passing the whole config to a function follows it into that function (positional or keyword argument
  -> the parameter's name), recursively, through pipelines and covidscan code.
* Anything the scan cannot follow fails the test (an unknown attribute of the config, ``getattr``, a call
  into code outside pipelines/covidscan): the stage then has to be restructured to pass sections, or the
  scan taught, explicitly. So a new undeclared read fails here rather than going unnoticed.

The scan sees reads of the stage's own config object; a function that loads params.yaml itself
(``load_params()``) inside the library is flagged as well, since its sections are invisible to DVC.

At run time the same rule holds: every stage loads its params with ``pipelines.load_stage_params(stage)``
from ``build/params/<stage>.json`` only, and reading a section the stage does not declare raises
:class:`~covidscan.errors.ConfigError` (tested below for every stage and every undeclared section).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import textwrap
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pytest

from covidscan.config import STAGE_SECTIONS, Params, load_params, write_effective
from covidscan.errors import ConfigError
from pipelines import load_stage_params
from tests.conftest import ROOT

SECTIONS = frozenset(Params.model_fields) - {"profiles"}
NOT_A_READ = frozenset({"model_copy", "experiment_name"})  # StageParams.experiment_name: bookkeeping (NOT_AN_OUTPUT)
WHOLE = frozenset({"model_dump", "model_dump_json"})
# function (module.qualname) -> why serialising the whole config there does not change the stage's outputs
WHOLE_CONFIG_OK = {
    "covidscan.training.checkpoint.checkpoint_dir": "a hash key of resumable checkpoints: a change only makes training start afresh",
    "covidscan.tuning.study.optimize": "hands the config (as JSON) to worker processes that call run_worker(params, ...), "
    "which the scan follows from the same function's one-worker branch",
}
# (section, key) read for bookkeeping only: it never changes a stage's outputs
NOT_AN_OUTPUT = {("run", "experiment_name")}  # the MLflow experiment the stage's run is logged under
FOLLOW = ("pipelines", "covidscan")


@dataclass
class Reads:
    sections: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)


def _function_node(func: Any) -> ast.FunctionDef:
    tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    node = tree.body[0]
    assert isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    return node


def _import_map(module: ModuleType) -> dict[str, str]:
    """Name -> dotted target for every import anywhere in the module (function-local imports included)."""
    out: dict[str, str] = {}
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                out[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                out[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]
    return out


def _load(dotted: str) -> Any:
    """A module, or an attribute of one, from a dotted name."""
    try:
        return importlib.import_module(dotted)
    except ImportError:
        mod, _, attr = dotted.rpartition(".")
        return getattr(_load(mod), attr)


def _resolve(call: ast.Call, module: ModuleType, imports: dict[str, str]) -> Any | None:
    func = call.func
    if isinstance(func, ast.Name):
        if func.id in imports:
            return _load(imports[func.id])
        return getattr(module, func.id, None)
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        base = _load(imports[func.value.id]) if func.value.id in imports else getattr(module, func.value.id, None)
        if isinstance(base, ModuleType):
            return getattr(base, func.attr, None)
    return None


def _param_for(node: ast.FunctionDef, call: ast.Call, tracked: set[str]) -> list[str]:
    """The callee's parameter names that receive the whole config."""
    positional = [a.arg for a in (*node.args.posonlyargs, *node.args.args)]
    names = [a.arg for a in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs)]
    if positional and positional[0] in ("self", "cls") and isinstance(call.func, ast.Name):
        positional = positional[1:]  # a class called: its __init__'s self is not an argument
    out = []
    for i, arg in enumerate(call.args):
        if ast.unparse(arg) in tracked:
            out.append(positional[i] if i < len(positional) else "*" + (node.args.vararg.arg if node.args.vararg else "?"))
    for kw in call.keywords:
        if ast.unparse(kw.value) in tracked:
            out.append(kw.arg if kw.arg in names else "**")
    return out


def _passes_config(call: ast.Call, tracked: set[str]) -> bool:
    return any(ast.unparse(a) in tracked for a in (*call.args, *(k.value for k in call.keywords)))


def _returns_config(call: ast.Call, module: ModuleType, imports: dict[str, str]) -> bool:
    """Whether the called function is annotated to return the config (``-> Params``)."""
    callee = _resolve(call, module, imports)
    if callee is None or isinstance(callee, type) or not callable(callee):
        return False
    returns = _function_node(callee).returns
    return returns is not None and ast.unparse(returns) in ("Params", "covidscan.config.Params")


_MEMO: dict[tuple[str, str], Reads] = {}


def scan(func: Any, pname: str, stack: tuple[str, ...] = ()) -> Reads:
    """The sections ``func`` reads of the config held by ``pname`` (a parameter name, or ``self.<attr>``)."""
    module = inspect.getmodule(func)
    qual = f"{module.__name__}.{func.__qualname__}"
    key = (qual, pname)
    if key in _MEMO:
        return _MEMO[key]
    if qual in stack:
        return Reads()
    reads = Reads()
    node = _function_node(func)
    imports = _import_map(module)
    tracked = {pname}
    changed = True
    while changed:  # aliases: names assigned the config, or a call annotated to return it
        changed = False
        pairs = []
        for n in ast.walk(node):
            if isinstance(n, ast.Assign):
                for target in n.targets:
                    if isinstance(target, ast.Tuple) and isinstance(n.value, ast.Tuple) and len(target.elts) == len(n.value.elts):
                        pairs += zip(target.elts, n.value.elts)  # a, b = x, y: element by element
                    else:
                        pairs.append((target, n.value))
        for target, value in pairs:
            holds = ast.unparse(value) in tracked or (
                isinstance(value, ast.Call) and _passes_config(value, tracked) and _returns_config(value, module, imports)
            )
            text = ast.unparse(target)
            if holds and text not in tracked:
                if isinstance(target, ast.Attribute) and ast.unparse(target.value) == "self":
                    # stored on the object: follow it into every method of the class
                    cls = getattr(module, func.__qualname__.split(".")[0])
                    for name, method in vars(cls).items():
                        if inspect.isfunction(method) and method is not func:
                            sub = scan(method, text, (*stack, qual))
                            reads.sections |= sub.sections
                            reads.problems += sub.problems
                elif not isinstance(target, ast.Name):
                    reads.problems.append(f"{qual}: stores the config in {text}, which the scan cannot follow")
                    continue
                tracked.add(text)
                changed = True
    bookkeeping = {id(n.value) for n in ast.walk(node) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Attribute)
                   and ast.unparse(n.value.value) in tracked and (n.value.attr, n.attr) in NOT_AN_OUTPUT}  # fmt: skip
    for n in ast.walk(node):
        if isinstance(n, ast.Attribute):
            value = n.value
            if ast.unparse(value) in tracked:
                if id(n) in bookkeeping:
                    continue
                if n.attr in SECTIONS:
                    reads.sections.add(n.attr)
                elif n.attr in WHOLE:
                    if qual not in WHOLE_CONFIG_OK:
                        reads.sections |= SECTIONS
                        reads.problems.append(f"{qual}: serialises the whole config ({ast.unparse(n)})")
                elif n.attr not in NOT_A_READ:
                    reads.problems.append(f"{qual}: cannot tell what {ast.unparse(n)} reads")
            elif isinstance(value, ast.Call) and _passes_config(value, tracked) and n.attr in SECTIONS:
                reads.sections.add(n.attr)  # e.g. tuned_params(params, target).train
        elif isinstance(n, ast.Call):
            if isinstance(n.func, ast.Name) and n.func.id == "load_params" and stack:
                reads.problems.append(f"{qual}: loads params.yaml itself (load_params); pass it the stage's params instead")
            if not _passes_config(n, tracked):
                continue
            callee = _resolve(n, module, imports)
            name = ast.unparse(n.func)
            if callee is None or not callable(callee) or not getattr(inspect.getmodule(callee), "__name__", "").startswith(FOLLOW):
                reads.problems.append(f"{qual}: passes the whole config to {name}, which the scan cannot follow")
                continue
            target = callee.__init__ if isinstance(callee, type) else callee
            for param in _param_for(_function_node(target), n, tracked):
                if param.startswith("*"):
                    reads.problems.append(f"{qual}: passes the whole config to {name} as {param}")
                    continue
                sub = scan(target, param, (*stack, qual))
                reads.sections |= sub.sections
                reads.problems += sub.problems
    _MEMO[key] = reads
    return reads


def stage_reads(stage: str) -> Reads:
    module = importlib.import_module(f"pipelines.{stage}")
    return scan(module.main, "params")


@pytest.mark.parametrize("stage", sorted(STAGE_SECTIONS))
def test_every_section_a_stage_reads_is_in_its_effective_file(stage):
    reads = stage_reads(stage)
    assert not reads.problems, "\n".join(dict.fromkeys(reads.problems))
    undeclared = sorted(reads.sections - set(STAGE_SECTIONS[stage]))
    assert not undeclared, f"stage {stage} reads {undeclared} but STAGE_SECTIONS[{stage!r}] = {STAGE_SECTIONS[stage]}"


def test_the_scan_follows_the_config_into_helpers_and_the_library():
    """The scan is not vacuous: it finds reads made only inside called functions."""
    distill = stage_reads("distill").sections
    assert "evaluate" in distill  # training.threshold.set_operating_threshold(..., params.evaluate, ...)
    assert {"train", "models", "preprocess", "run", "tune"} <= distill  # train_student / tuned_params
    assert {"registry", "experiments", "preprocess"} <= stage_reads("register").sections  # promotion.gate_registered
    assert {"models", "train", "run", "preprocess"} <= stage_reads("train_csacnet").sections  # training.volume.train_volume_model


# ------------------------------------------------------------------ run time: load_stage_params
@pytest.fixture(scope="module")
def effective(tmp_path_factory):
    """build/params/ as `configure` writes it from the project's params.yaml (demo profile)."""
    out = tmp_path_factory.mktemp("params")
    write_effective(load_params(ROOT / "params.yaml", profile="demo"), out)
    return out


@pytest.mark.parametrize("stage", sorted(STAGE_SECTIONS))
def test_a_stage_reading_an_undeclared_section_fails(stage, effective):
    params = load_stage_params(stage, effective / f"{stage}.json")
    full = load_params(ROOT / "params.yaml", profile="demo")
    for section in STAGE_SECTIONS[stage]:  # declared: the resolved values, as params.yaml gives them
        assert getattr(params, section) == getattr(full, section)
    for section in sorted(SECTIONS - set(STAGE_SECTIONS[stage])):
        with pytest.raises(ConfigError, match=rf"stage '{stage}' read params section '{section}'.*STAGE_SECTIONS\['{stage}'\]"):
            getattr(params, section)
    assert set(params.model_dump()) == set(STAGE_SECTIONS[stage])  # no invented defaults in a dump either
    copied = params.model_copy(update={STAGE_SECTIONS[stage][0]: getattr(params, STAGE_SECTIONS[stage][0])})
    with pytest.raises(ConfigError):
        copied.profile  # still guarded after a copy


def test_a_stale_or_missing_effective_file_fails(effective, tmp_path):
    stale = tmp_path / "synth.json"
    stale.write_text((effective / "ingest.json").read_text())
    with pytest.raises(ConfigError, match="rerun configure"):
        load_stage_params("synth", stale)
    with pytest.raises(ConfigError, match="not found"):
        load_stage_params("synth", tmp_path / "absent.json")
    with pytest.raises(ConfigError, match="unknown stage"):
        load_stage_params("nope")


def _calls(path) -> set[str]:
    return {n.func.id if isinstance(n.func, ast.Name) else ast.unparse(n.func)
            for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)}


@pytest.mark.parametrize("stage", sorted(STAGE_SECTIONS))
def test_every_stage_loads_only_its_effective_params(stage):
    module = ROOT / "pipelines" / f"{stage}.py"
    calls = _calls(module)
    assert "load_params" not in calls, f"{module.name} reads params.yaml (load_params); use load_stage_params({stage!r})"
    for call in (n for n in ast.walk(ast.parse(module.read_text())) if isinstance(n, ast.Call)):
        if ast.unparse(call.func) == "load_stage_params":
            assert isinstance(call.args[0], ast.Constant) and call.args[0].value == stage, ast.unparse(call)
    assert "load_stage_params" in calls, f"{module.name} does not load its params with load_stage_params({stage!r})"
