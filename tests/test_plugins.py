"""Third-party poisons, defenses and recovery attacks through entry points (certify/plugins.py).

The example plugin (examples/certify-plugin-example) is installed by pip, offline, into a temporary
folder that only these tests put on the path; installing it into the venv would put its poison in
every other test's registry (`--poison all`, `certify list`, the gate's baselines). Broken,
colliding, defense and recovery plugins are tiny fake distributions: a `*.dist-info` folder with
METADATA and entry_points.txt beside a module is all importlib.metadata needs to see one.
"""
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from attacks.base import POISONS, CraftContext
from attacks.recovery import RECOVERY, RecoveryInputs
from certify.cli import main
from certify.errors import UserError
from certify.models import build_model
from certify.training import TrainConfig, evaluate
from defenses.base import DEFENSES

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "certify-plugin-example"
ORIGIN = "certify-plugin-example 0.1.0"

# a defense and a recovery attack from one distribution, through both groups
TINY = {
    "entry_points": {"certify.defenses": {"hflip": "plug_tiny_defense"},
                     "certify.recovery": {"still": "plug_tiny_recovery"}},
    "modules": {
        "plug_tiny_defense": """
            from defenses.base import DEFENSES, Defense

            @DEFENSES.register("hflip", "every training image mirrored left-right")
            def make(params):
                return Defense("hflip", prepare=lambda x, y, seed: (x.flip(-1), y))
        """,
        "plug_tiny_recovery": """
            from dataclasses import dataclass
            from typing import ClassVar

            from attacks.recovery import RECOVERY
            from certify.training import evaluate

            @dataclass
            class StillParams:
                bn: ClassVar[str] = "frozen"
                constraint: ClassVar[str] = "ball"

            @RECOVERY.register("still", "theta_ue itself at every eta (no attack)", StillParams)
            def still(inputs, params):
                acc = evaluate(inputs.model, inputs.x_test, inputs.y_test)
                return [{"eta": eta, "accuracy": acc} for eta in inputs.etas]
        """,
    },
}


def fake_dist(site: Path, name: str, version: str, entry_points: dict, modules: dict) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) for group, eps in entry_points.items()))
    for module, source in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))


def subprocess_env(*paths: Path) -> dict:
    """This interpreter's environment with `paths` and this checkout first on PYTHONPATH."""
    old = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([*map(str, paths), str(ROOT)] + ([old] if old else []))}


def warnings_in(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("certify: warning:")]


@pytest.fixture(scope="session")
def example_site(tmp_path_factory):
    """The example installed by pip into its own folder, from a copy (a build writes build/ and
    *.egg-info beside its source); offline: --no-index, and the venv's setuptools builds it."""
    base = tmp_path_factory.mktemp("example")
    src = shutil.copytree(EXAMPLE, base / "src")
    res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--no-index", "--target", str(base / "site"), str(src)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return base / "site"


@pytest.fixture
def plugin_site(tmp_path, monkeypatch):
    """A folder on sys.path for fake distributions; the registries keep their built-ins and load
    plugins again on their next lookup; all restored afterwards."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    for registry in (POISONS, DEFENSES, RECOVERY):
        registry.names()
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
        monkeypatch.setattr(registry, "_loaded", False)
    before = set(sys.modules)
    yield site
    for name in set(sys.modules) - before:
        if name.startswith("plug_") or name == "certify_checkerboard":
            del sys.modules[name]


def test_example_is_listed_with_its_origin(example_site, plugin_site, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(example_site))
    assert main(["list"]) == 0
    out, err = capsys.readouterr()
    assert not err
    lines = out.splitlines()
    at = lines.index(f"poisons (plugin {ORIGIN}):")
    assert lines[at + 1].split()[0] == "checkerboard"
    builtins = lines[lines.index("poisons (built-in):") + 1:at]
    assert "miue" in {line.split()[0] for line in builtins} and not any("checkerboard" in b for b in builtins)


def test_example_poison_params_and_crafting(example_site, plugin_site, monkeypatch, digits, capsys, tmp_path):
    monkeypatch.syspath_prepend(str(example_site))
    entry = POISONS.get("checkerboard")
    assert entry.origin == ORIGIN
    # its Params go through the same checks as a built-in's, from the CLI too: one line, exit 2
    with pytest.raises(UserError, match="cells"):
        POISONS.params("checkerboard", {"cells": 2})
    bad = tmp_path / "bad.yaml"
    bad.write_text("poison_params:\n  checkerboard:\n    cell: 0\n")
    code = main(["run", "--dataset", "digits", "--poison", "checkerboard", "--config", str(bad)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["certify: error: poison checkerboard: cell must be an integer >= 1 "
                                 "(pixels on a 32-pixel side), got 0"]
    # a class-wise pattern within its l-inf budget: +-epsilon wherever nothing was clipped, and at
    # each pixel one sign per class
    params = POISONS.params("checkerboard", {}, dataset="digits")
    ctx = CraftContext(digits.x_train, digits.y_train, digits.num_classes, None, TrainConfig(), 7, torch.device("cpu"))
    released = entry.factory(ctx, params)
    delta = released - digits.x_train
    inside = (released > 0) & (released < 1)
    assert inside.float().mean() > 0.2
    assert torch.allclose(delta[inside].abs(), torch.full_like(delta[inside], 8 / 255), atol=1e-6)
    assert delta.abs().max() <= 8 / 255 + 1e-6
    for k in range(digits.num_classes):
        d = delta[digits.y_train == k]
        assert not ((d > 1e-6).any(0) & (d < -1e-6).any(0)).any()


def test_broken_plugin_is_one_warning_and_registers_nothing(plugin_site, capsys):
    fake_dist(plugin_site, "broken-plugin", "1.0", {"certify.poisons": {"halfway": "plug_broken"}},
              {"plug_broken": """
                  from attacks.base import POISONS, PoisonParams

                  @POISONS.register("halfway", "registered before the import fails", PoisonParams)
                  def craft(ctx, p):
                      return ctx.x

                  raise RuntimeError("boom")
              """})
    assert main(["list"]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == ["certify: warning: plugin broken-plugin 1.0 (certify.poisons: halfway = "
                                "plug_broken): not loaded: RuntimeError: boom"]
    assert "miue" in out and "halfway" not in out
    # its name is unknown; the warning is not repeated in the same process
    assert main(["run", "--dataset", "digits", "--poison", "halfway"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("certify: error: unknown poison 'halfway'; choose from: ")


def test_plugin_cannot_take_a_taken_name(plugin_site, capsys):
    def poisons(*names):
        return "from attacks.base import POISONS, PoisonParams\n" + "".join(
            f"POISONS.register({n!r}, 'a copy', PoisonParams)(lambda ctx, p: ctx.x)\n" for n in names)

    fake_dist(plugin_site, "collide-plugin", "2.0", {"certify.poisons": {"mine": "plug_collide"}},
              {"plug_collide": poisons("miue", "lite")})
    fake_dist(plugin_site, "another", "1.0", {"certify.poisons": {"first": "plug_another"}},
              {"plug_another": poisons("lite", "other")})
    assert main(["list"]) == 0
    out, err = capsys.readouterr()
    assert warnings_in(err) == err.splitlines() == [
        "certify: warning: plugin collide-plugin 2.0 (certify.poisons: mine = plug_collide): poison 'miue' not "
        "registered: the name is taken (built-in)",
        "certify: warning: plugin collide-plugin 2.0 (certify.poisons: mine = plug_collide): poison 'lite' not "
        "registered: the name is taken (another 1.0)"]
    assert POISONS.get("miue").origin == "built-in" and POISONS.get("miue").factory.__module__ == "attacks.miue"
    assert {n: POISONS.get(n).origin for n in ("lite", "other")} == {"lite": "another 1.0", "other": "another 1.0"}
    assert "poisons (plugin another 1.0):" in out and "poisons (plugin collide-plugin 2.0):" not in out


def test_origin_across_registries(plugin_site, capsys):
    """A plugin's import may reach another registry before that one has loaded: a built-in module it
    imports stays built-in, and its own registrations there meet that registry's built-ins first."""
    for pkg, what, group in (("plug_xa", "gadget", "a"), ("plug_xb", "widget", "b")):
        (plugin_site / pkg).mkdir()
        (plugin_site / pkg / "__init__.py").write_text(
            f"from certify.registry import Registry\nREG = Registry({what!r}, package={pkg!r}, group='test.{group}')\n")
    for name in ("u", "w"):
        (plugin_site / "plug_xb" / f"{name}.py").write_text(
            f"from plug_xb import REG\nREG.register({name!r}, 'built-in')(lambda: {name!r})\n")
    fake_dist(plugin_site, "cross", "1.0", {"test.a": {"g": "plug_xplugin"}}, {"plug_xplugin": """
        import plug_xb.w  # a built-in module of the other registry, first imported here
        from plug_xa import REG as A
        from plug_xb import REG as B

        A.register("g", "the plugin's gadget")(lambda: "g")
        B.register("w", "the plugin's w")(lambda: "mine")
        B.register("u", "the plugin's u")(lambda: "mine")
        B.register("v", "the plugin's widget")(lambda: "v")
    """})
    import plug_xa

    assert [(e.name, e.origin) for e in plug_xa.REG.entries()] == [("g", "cross 1.0")]
    import plug_xb

    assert [(e.name, e.origin, e.factory()) for e in plug_xb.REG.entries()] == [
        ("u", "built-in", "u"), ("v", "cross 1.0", "v"), ("w", "built-in", "w")]
    assert capsys.readouterr().err.splitlines() == [
        f"certify: warning: plugin cross 1.0 (test.a: g = plug_xplugin): widget {n!r} not registered: "
        "the name is taken (built-in)" for n in ("w", "u")]


@pytest.mark.parametrize("group, source, message", [
    ("certify.poisons", """
        from dataclasses import dataclass
        from attacks.base import POISONS

        @dataclass
        class P:
            epsilon: float = 0.1

        POISONS.register("m", "params not a PoisonParams", P)(lambda ctx, p: ctx.x)
     """, "poison 'm' not registered: params must subclass attacks.base.PoisonParams"),
    ("certify.poisons", """
        from dataclasses import dataclass
        from typing import ClassVar
        from attacks.base import POISONS, PoisonParams

        @dataclass
        class P(PoisonParams):
            norm: ClassVar[str] = "l3"

        POISONS.register("m", "an unknown norm", P)(lambda ctx, p: ctx.x)
     """, "poison 'm' not registered: norm must be one of linf, l2, l0, none, got 'l3'"),
    ("certify.recovery", """
        from dataclasses import dataclass
        from attacks.recovery import RECOVERY

        @dataclass
        class P:
            steps: int = 1

        RECOVERY.register("m", "no bn, no constraint", P)(lambda inputs, p: [])
     """, "recovery attack 'm' not registered: params must declare bn as one of frozen, re-estimated"),
    ("certify.defenses", """
        from defenses.base import DEFENSES

        class P:
            pass

        DEFENSES.register("m", "params not a dataclass", P)(lambda p: None)
     """, "defense 'm' not registered: params must be a dataclass type"),
    ("certify.poisons", """
        from attacks.base import POISONS, PoisonParams

        POISONS.register("all", "what --poison all means", PoisonParams)(lambda ctx, p: ctx.x)
     """, "poison 'all' not registered: the name is reserved"),
    ("certify.defenses", """
        from defenses.base import DEFENSES, Defense

        DEFENSES.register("none", "what --defense none means")(lambda p: Defense("none"))
     """, "defense 'none' not registered: the name is reserved"),
], ids=["poison-params-not-PoisonParams", "poison-unknown-norm", "recovery-without-bn", "defense-params-not-dataclass",
        "poison-named-all", "defense-named-none"])
def test_plugin_breaking_the_params_contract_is_refused(plugin_site, capsys, group, source, message):
    fake_dist(plugin_site, "contract", "0.1", {group: {"m": "plug_contract"}}, {"plug_contract": source})
    registry = {"certify.poisons": POISONS, "certify.defenses": DEFENSES, "certify.recovery": RECOVERY}[group]
    refused = message.split("'")[1]
    assert refused not in registry.names() and len(registry.names()) > 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("certify: warning: plugin contract 0.1 (") and message in line, line
    with pytest.raises(UserError, match=f"unknown {registry.what} '{refused}'"):
        registry.get(refused)


@pytest.mark.parametrize("raised", ["SystemExit(3)", "KeyboardInterrupt()"])
def test_plugin_import_that_exits_is_a_broken_plugin(plugin_site, capsys, raised):
    """sys.exit() or a KeyboardInterrupt from a plugin's import ends neither the command nor the process."""
    fake_dist(plugin_site, "exits", "1.0", {"certify.poisons": {"bye": "plug_exits"}},
              {"plug_exits": f"raise {raised}\n"})
    assert main(["list"]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [f"certify: warning: plugin exits 1.0 (certify.poisons: bye = plug_exits): not loaded: "
                                f"{raised.partition('(')[0]}: {'3' if 'Exit' in raised else ''}".rstrip()]
    assert "miue" in out


def test_distribution_without_a_name_is_not_loaded(plugin_site, capsys):
    """Beside a named plugin (sorting the two by name compared None with a string: a traceback)."""
    fake_dist(plugin_site, "nameless", "1.0", {"certify.poisons": {"anon": "plug_nameless"}},
              {"plug_nameless": "raise AssertionError('imported')\n"})
    info = plugin_site / "nameless-1.0.dist-info"
    info.joinpath("METADATA").write_text("Metadata-Version: 2.1\nVersion: 1.0\n")
    fake_dist(plugin_site, "named", "1.0", {"certify.poisons": {"n": "plug_named"}}, {"plug_named": """
        from attacks.base import POISONS, PoisonParams

        POISONS.register("n", "a plugin with a name", PoisonParams)(lambda ctx, p: ctx.x)
    """})
    assert main(["list"]) == 0
    assert capsys.readouterr().err.splitlines() == [
        "certify: warning: plugin an unnamed distribution (certify.poisons: anon = plug_nameless): not loaded: "
        "its metadata has no Name"]
    assert "plug_nameless" not in sys.modules and POISONS.get("n").origin == "named 1.0"


# what a plugin's craft returns (or raises), and the line that says so
CRAFTS = [
    ("raises", "raise ValueError('no\\nluck')", "craft failed: ValueError: no luck"),
    ("exits", "sys.exit(4)", "craft failed: SystemExit: 4"),
    ("none", "return None", "craft returned NoneType; expected float32 images shaped like the clean ones"),
    ("shape", "return ctx.x[:, :, :4]", "craft returned shape"),
    ("dtype", "return ctx.x.double()", "craft returned a float64 strided tensor"),
    ("nan", "return ctx.x * float('nan')", "craft returned NaN or Inf"),
    ("range", "return ctx.x + 2", "craft returned values 2 .. 3, outside [0, 1]"),
    ("budget", "return (ctx.x + 0.5).clamp(0, 1)", "released data exceeds its linf budget"),
    # fourth pass (issue 32)
    ("meta", "return torch.empty_like(ctx.x, device='meta')", "craft returned a tensor on device meta"),
    ("subclass", "return ctx.x.clone().as_subclass(Evil)", "craft returned a Evil (a torch.Tensor subclass)"),
    ("generator-exit", "raise GeneratorExit('bye')", "craft failed: GeneratorExit: bye"),
    ("base-exception", "raise Custom('own')", "craft failed: Custom: own"),
    # the budget is measured against the clean set as it was, not as the plugin left it
    ("writes-clean", "ctx.x.add_(0.5).clamp_(0, 1); return ctx.x.clone()", "released data exceeds its linf budget"),
]


@pytest.mark.parametrize("body, message", [c[1:] for c in CRAFTS], ids=[c[0] for c in CRAFTS])
def test_plugin_craft_is_checked_at_the_boundary(plugin_site, capsys, tmp_path, body, message):
    fake_dist(plugin_site, "bad-craft", "0.2", {"certify.poisons": {"m": "plug_bad_craft"}}, {"plug_bad_craft": f"""
        import sys
        import torch
        from attacks.base import POISONS, PoisonParams

        class Evil(torch.Tensor):  # a subclass that overrides every operation, even .shape
            @classmethod
            def __torch_function__(cls, func, types, args=(), kwargs=None):
                raise RuntimeError("evil")

        class Custom(BaseException):
            pass

        @POISONS.register("m", "a craft that goes wrong", PoisonParams)
        def craft(ctx, p):
            {body}
    """})
    out, cache = tmp_path / "out", tmp_path / "cache"
    code = main(["--quiet", "poison", "--poison", "m", "--dataset", "digits", "--format", "npz", "--out", str(out),
                 "--cache-dir", str(cache)])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("certify: error: poison m (plugin bad-craft 0.2): ") and message in err[0], err[0]
    assert not out.exists() or not any(out.iterdir())
    assert not list(cache.rglob("craft-*"))


@pytest.mark.parametrize("body, message", [("return None", "make returned NoneType; expected a defenses.base.Defense"),
                                           ("raise RuntimeError('x')", "make failed: RuntimeError: x")],
                         ids=["none", "raises"])
def test_plugin_defense_make_is_checked_at_the_boundary(plugin_site, body, message):
    from defenses.base import make

    fake_dist(plugin_site, "bad-defense", "0.1", {"certify.defenses": {"d": "plug_bad_defense"}},
              {"plug_bad_defense": f"""
        from defenses.base import DEFENSES

        @DEFENSES.register("d", "a make that goes wrong")
        def make(params):
            {body}
    """})
    with pytest.raises(UserError) as e:
        make("d", None)
    assert str(e.value) == f"defense d (plugin bad-defense 0.1): {message}"
    assert make("jpeg", DEFENSES.params("jpeg")).name == "jpeg"  # a built-in's passes


@pytest.mark.parametrize("hook", ["prepare", "loss_fn"])
def test_a_plugin_defense_hook_that_raises_during_training_is_one_line(plugin_site, tmp_path, capsys, hook):
    fake_dist(plugin_site, "bad-hook", "0.3", {"certify.defenses": {"h": "plug_bad_hook"}}, {"plug_bad_hook": f"""
        from defenses.base import DEFENSES, Defense

        def boom(*args, **kwargs):
            raise ValueError("hook broke")

        @DEFENSES.register("h", "a defense whose hook goes wrong")
        def make(params):
            return Defense("h", {hook}=boom)
    """})
    code = main(["--quiet", "run", "--poison", "random", "--dataset", "digits", "--defense", "h", "--executor",
                 "serial", "--skip", "certify,scores,recovery", "--out", str(tmp_path / "out"), "--cache-dir",
                 str(tmp_path / "cache")])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0] == f"certify: error: defense h (plugin bad-hook 0.3): {hook} failed: ValueError: hook broke"


def test_a_plugin_craft_returning_a_parameter_is_its_values(plugin_site, tmp_path, capsys):
    """A tensor that requires grad (an nn.Parameter) is a release of its values, detached."""
    import numpy as np

    fake_dist(plugin_site, "grad-craft", "0.1", {"certify.poisons": {"g": "plug_grad_craft"}}, {"plug_grad_craft": """
        import torch
        from attacks.base import POISONS, PoisonParams

        @POISONS.register("g", "a Parameter", PoisonParams)
        def craft(ctx, p):
            return torch.nn.Parameter(ctx.x.clone())
    """})
    out = tmp_path / "out"
    assert main(["--quiet", "poison", "--poison", "g", "--dataset", "digits", "--format", "npz", "--out", str(out),
                 "--cache-dir", str(tmp_path / "cache")]) == 0, capsys.readouterr().err
    with np.load(out / "data.npz") as z:
        assert z["x"].dtype == np.uint8


def test_plugin_params_that_fail_are_one_line(plugin_site, capsys):
    """A plugin's Params run its code (a default factory, validate): behind the boundary too."""
    fake_dist(plugin_site, "bad-params", "0.4", {"certify.poisons": {"v": "plug_bad_params"}}, {"plug_bad_params": """
        from dataclasses import dataclass
        from attacks.base import POISONS, PoisonParams

        @dataclass
        class P(PoisonParams):
            def validate(self, where):
                raise ValueError("validate broke")

        POISONS.register("v", "params whose validate raises", P)(lambda ctx, p: ctx.x)
    """})
    assert main(["run", "--dataset", "digits", "--poison", "v", "--executor", "serial"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "certify: error: poison v (plugin bad-params 0.4): parameters failed: ValueError: validate broke"]


def test_plugin_epsilon_for_that_fails_is_one_line(plugin_site, tmp_path, capsys):
    """A plugin's Params may override epsilon_for (the applied budget): called outside the craft, it
    was a traceback."""
    fake_dist(plugin_site, "bad-eps", "0.4", {"certify.poisons": {"e": "plug_bad_eps"}}, {"plug_bad_eps": """
        from dataclasses import dataclass
        from attacks.base import POISONS, PoisonParams

        @dataclass
        class P(PoisonParams):
            def epsilon_for(self, shape):
                raise ValueError("no budget")

        POISONS.register("e", "params whose epsilon_for raises", P)(lambda ctx, p: ctx.x)
    """})
    assert main(["--quiet", "poison", "--poison", "e", "--dataset", "digits", "--format", "npz", "--out",
                 str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "certify: error: poison e (plugin bad-eps 0.4): epsilon_for failed: ValueError: no budget"]


# what a plugin defense's hook returns, and the line that says so (fourth pass, issue 32)
HOOK_RESULTS = [
    ("bt-shape", "batch_transform=lambda x, y, g: (x[:, :, :4], y)", "batch_transform returned images as a float32 "
     "tensor of shape"),
    ("bt-float64", "batch_transform=lambda x, y, g: (x.double(), y)", "batch_transform returned images as a float64"),
    ("bt-nan", "batch_transform=lambda x, y, g: (x * float('nan'), y)", "batch_transform returned images with NaN"),
    ("bt-none", "batch_transform=lambda x, y, g: None", "batch_transform returned NoneType; expected (images, labels)"),
    ("bt-labels", "batch_transform=lambda x, y, g: (x, y + 100)", "batch_transform returned labels 10"),
    ("prepare-none", "prepare=lambda x, y, s: None", "prepare returned NoneType"),
    ("prepare-labels", "prepare=lambda x, y, s: (x, y.float())", "prepare returned labels as a float32 tensor"),
    ("loss-vector", "loss_fn=lambda m, x, y, g: F.cross_entropy(m(x), y, reduction='none')",
     "loss_fn returned a float32 tensor of shape"),
    ("loss-float", "loss_fn=lambda m, x, y, g: 1.0", "loss_fn returned float; expected a scalar float tensor"),
    ("loss-nan", "loss_fn=lambda m, x, y, g: F.cross_entropy(m(x), y) * float('nan')",
     "loss_fn returned a NaN or infinite loss"),
]


@pytest.mark.parametrize("hooks, message", [h[1:] for h in HOOK_RESULTS], ids=[h[0] for h in HOOK_RESULTS])
def test_what_a_plugin_defense_hook_returns_is_checked(plugin_site, tmp_path, capsys, hooks, message):
    fake_dist(plugin_site, "odd-hook", "0.5", {"certify.defenses": {"o": "plug_odd_hook"}}, {"plug_odd_hook": f"""
        import torch.nn.functional as F
        from defenses.base import DEFENSES, Defense

        @DEFENSES.register("o", "a defense whose hook returns something odd")
        def make(params):
            return Defense("o", {hooks})
    """})
    out = tmp_path / "out"
    code = main(["--quiet", "run", "--poison", "random", "--dataset", "digits", "--defense", "o", "--executor",
                 "serial", "--skip", "certify,scores,recovery", "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("certify: error: defense o (plugin odd-hook 0.5): ") and message in err[0], err[0]
    assert not (out / "report.json").exists()


@pytest.mark.parametrize("curve, message", [
    ("None", "recover returned NoneType; expected a list of 2 points"),
    ("[]", "recover returned 0 points; expected a list of 2 points"),
    ("[{'eta': e} for e in etas]", "point 0 as dict with keys eta; expected a dict with eta and accuracy"),
    ("[{'eta': e, 'accuracy': float('nan')} for e in etas]", "accuracy nan at point 0; expected a number in [0, 1]"),
    ("[{'eta': e, 'accuracy': 'high'} for e in etas]", "accuracy 'high' at point 0"),
    ("[{'eta': e, 'accuracy': 7} for e in etas]", "accuracy 7 at point 0"),
    ("[{'eta': 0.0, 'accuracy': 0.5} for e in etas]", "eta 0 at point 1; expected 2 (the etas it was given"),
], ids=["none", "empty", "no-accuracy", "nan", "string", "over-one", "etas-changed"])
def test_a_plugin_recovery_curve_is_checked(plugin_site, curve, message):
    """(fourth pass, issue 32) before it is cached or reported: section() read it unchecked."""
    from certify.recovery import checked_curve

    fake_dist(plugin_site, "odd-curve", "0.6", {"certify.recovery": {"c": "plug_odd_curve"}}, {"plug_odd_curve": """
        from dataclasses import dataclass
        from typing import ClassVar
        from attacks.recovery import RECOVERY

        @dataclass
        class P:
            bn: ClassVar[str] = "frozen"
            constraint: ClassVar[str] = "ball"

        RECOVERY.register("c", "a curve to check", P)(lambda inputs, params: [])
    """})
    etas = [0.0, 2.0]
    with pytest.raises(UserError) as e:
        checked_curve("c", eval(curve, {"etas": etas}), etas)
    assert str(e.value).startswith("recovery attack c (plugin odd-curve 0.6): recover returned ")
    assert message in str(e.value), str(e.value)
    good = [{"eta": 0, "accuracy": 1, "attacker_accuracy": 0.5}, {"eta": 2.0, "accuracy": 0.25}]
    assert checked_curve("c", good, etas) == [{"eta": 0.0, "accuracy": 1.0, "attacker_accuracy": 0.5},
                                              {"eta": 2.0, "accuracy": 0.25}]


def test_defense_and_recovery_plugins(plugin_site, digits, capsys):
    fake_dist(plugin_site, "tiny-methods", "0.3", **TINY)
    assert DEFENSES.get("hflip").origin == RECOVERY.get("still").origin == "tiny-methods 0.3"
    assert main(["list"]) == 0
    out, err = capsys.readouterr()
    assert not err and "defenses (plugin tiny-methods 0.3):\n  hflip" in out
    assert "recovery attacks (plugin tiny-methods 0.3):\n  still" in out
    x, y = digits.x_train[:5], digits.y_train[:5]
    assert torch.equal(DEFENSES.get("hflip").factory(DEFENSES.params("hflip")).prepare(x, y, 0)[0], x.flip(-1))
    model = build_model("cnn", digits.shape, digits.num_classes, seed=1)
    inputs = RecoveryInputs(model, x, y, digits.x_test, digits.y_test, (0.0, 2.0), seed=0)
    acc = evaluate(model, digits.x_test, digits.y_test)
    assert RECOVERY.get("still").factory(inputs, RECOVERY.params("still")) == [
        {"eta": 0.0, "accuracy": acc}, {"eta": 2.0, "accuracy": acc}]


@pytest.mark.slow
def test_run_with_plugins_on_ray(example_site, tmp_path):
    """The default executor: Ray workers look the names up and load the plugins themselves."""
    site = tmp_path / "site"
    fake_dist(site, "tiny-methods", "0.3", **TINY)
    cfg = tmp_path / "fast.yaml"
    cfg.write_text("train:\n  epochs: 3\nsurrogate:\n  epochs: 2\nsmoothing:\n  chunk: 25\n  sigma_draws: 10\n"
                   "recovery:\n  methods: [still]\n  eta_sigma: [0.5, 2.0]\n")
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "certify.cli", "--quiet", "run", "--dataset", "digits",
                          "--poison", "checkerboard", "--defense", "hflip", "--samples", "50", "--skip", "scores",
                          "--threads", "1", "--workers", "2", "--config", str(cfg), "--out", str(out),
                          "--cache-dir", str(tmp_path / "cache")],
                         capture_output=True, text=True, env=subprocess_env(example_site, site), timeout=600)
    assert res.returncode == 0 and not warnings_in(res.stderr), res.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["environment"]["executor"] == "ray"
    sec = report["poisons"]["checkerboard"]
    assert sec["parameters"] == {"epsilon": 8 / 255, "cell": 4}
    assert sec["origin"] == "certify-plugin-example 0.1.0" and report["poisons"]["none"]["origin"] == "built-in"
    assert "from the plugin certify-plugin-example 0.1.0" in (out / "report.md").read_text()
    assert sec["budget"]["norm"] == "linf" and 0 < sec["budget"]["measured"] <= 8 / 255 + 1e-6
    assert 0 <= sec["empirical"]["defenses"]["hflip"]["accuracy"] <= 1
    curve = sec["recovery"]["still"]["curve"]
    assert [p["eta_over_sigma"] for p in curve] == [0.5, 2.0] and curve[0]["accuracy"] == curve[1]["accuracy"]
    crafted = [t for t in report["execution"]["tasks"] if t["stage"] == "craft" and t["poison"] == "checkerboard"]
    assert len(crafted) == 1 and crafted[0]["node"]
