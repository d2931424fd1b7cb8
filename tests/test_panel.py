"""The victim panel (`--victims`): every architecture trains on each release, its own clean data and
under each defense; report.json, verdict, gate and plan read all of them."""
from __future__ import annotations

import json

import pytest
import torch

from certify.cli import main
from certify.gate import WEAKER, compare
from certify.planning.targets import attacker_best
from certify.replicates import combine
from certify.verdict import VerdictConfig, judge

FAST = "dataset: digits\ntrain: {epochs: 2}\nvictim_train: {mlp: {epochs: 3, lr: 0.1}}\n"


@pytest.fixture(scope="module")
def panel_run(tmp_path_factory):
    """One digits run with the panel cnn (crafting), mlp; OPS and the control, JPEG; cached for the rest."""
    tmp = tmp_path_factory.mktemp("panel")
    (tmp / "fast.yaml").write_text(FAST)
    args = ["--quiet", "run", "--config", str(tmp / "fast.yaml"), "--poison", "ops", "--defense", "jpeg",
            "--skip", "certify,scores,recovery", "--executor", "serial", "--cache-dir", str(tmp / "cache")]
    assert main([*args, "--victims", "cnn,mlp", "--out", str(tmp / "panel")]) == 0
    assert main([*args, "--out", str(tmp / "alone")]) == 0
    return tmp, args


def _report(path) -> dict:
    return json.loads((path / "report.json").read_text())


def test_each_victim_trains_on_the_release_its_clean_data_and_under_each_defense(panel_run):
    tmp, _ = panel_run
    report = _report(tmp / "panel")
    assert report["victims"]["crafting_model"] == "cnn" and report["victims"]["architectures"] == ["cnn", "mlp"]
    # the crafting model trains with `train`, the mlp with its victim_train override on top
    assert report["victims"]["training"]["cnn"]["epochs"] == 2
    assert report["victims"]["training"]["mlp"]["epochs"] == 3 and report["victims"]["training"]["mlp"]["lr"] == 0.1
    ops, control = report["poisons"]["ops"], report["poisons"]["none"]
    emp = ops["empirical"]
    crafting = ops["victims"]["cnn"]  # the crafting model's models, not trained twice
    assert crafting["protected_accuracy"] == emp["protected_accuracy"]
    assert crafting["defenses"]["jpeg"]["accuracy"] == emp["defenses"]["jpeg"]["accuracy"]
    mlp = ops["victims"]["mlp"]
    assert mlp["protected_accuracy"] != emp["protected_accuracy"]  # another model measured it
    assert mlp["clean_accuracy"] == control["victims"]["mlp"]["protected_accuracy"]  # its own clean model
    assert mlp["clean_accuracy"] != emp["clean_accuracy"]
    assert set(mlp["defenses"]) == {"jpeg"} and 0 <= mlp["defenses"]["jpeg"]["accuracy"] <= 1
    lo, hi = mlp["protected_interval"]
    assert lo <= mlp["protected_accuracy"] <= hi
    assert ops["replicates"][0]["victims"]["mlp"]["protected_accuracy"] == mlp["protected_accuracy"]
    stages = {t["stage"] for t in report["execution"]["tasks"]}
    assert {"train (mlp)", "defended (mlp)"} <= stages and "train (cnn)" not in stages


def test_one_craft_task_is_shared_by_every_victim(panel_run):
    tmp, _ = panel_run
    tasks = _report(tmp / "panel")["execution"]["tasks"]
    crafts = [t for t in tasks if t["stage"] == "craft"]
    assert sorted(t["poison"] for t in crafts) == ["none", "ops"]  # once per release, not per victim
    trained = sorted((t["stage"], t["poison"]) for t in tasks if t["stage"].startswith("train"))
    assert trained == [("train", "none"), ("train", "ops"), ("train (mlp)", "none"), ("train (mlp)", "ops")]


def test_serial_and_ray_give_the_same_panel_report(panel_run, ray_local):
    tmp, args = panel_run
    out = tmp / "on-ray"
    ray_args = [a for a in args if a not in ("--executor", "serial")]
    ray_args[ray_args.index("--cache-dir") + 1] = str(tmp / "ray-cache")  # nothing reused: Ray trains all
    assert main([*ray_args, "--executor", "ray", "--workers", "2", "--victims", "cnn,mlp", "--out", str(out)]) == 0
    serial, ray = _report(tmp / "panel"), _report(out)
    assert {t["node"] for t in ray["execution"]["tasks"]} != {"driver"}
    for name in ("none", "ops"):
        assert ray["poisons"][name]["victims"] == serial["poisons"][name]["victims"]
        assert ray["poisons"][name]["verdict"] == serial["poisons"][name]["verdict"]


def test_the_default_panel_gives_todays_report(panel_run):
    tmp, _ = panel_run
    alone, panel = _report(tmp / "alone"), _report(tmp / "panel")
    assert "victims" not in alone and "victims" not in alone["poisons"]["ops"]
    assert "victims" not in alone["poisons"]["ops"]["replicates"][0]
    # the crafting model's numbers do not move with the panel
    assert alone["poisons"]["ops"]["empirical"]["protected_accuracy"] == panel["poisons"]["ops"]["empirical"]["protected_accuracy"]


def test_the_verdict_is_judged_over_every_victim_and_names_it(panel_run):
    tmp, _ = panel_run
    report = _report(tmp / "panel")
    reasons = report["poisons"]["ops"]["verdict"]["reasons"]
    mlp = report["poisons"]["ops"]["victims"]["mlp"]
    assert any(r.startswith(f"mlp: protected accuracy {mlp['protected_accuracy']:.3f}") for r in reasons)
    assert any(r.startswith(f"jpeg (mlp) reaches {mlp['defenses']['jpeg']['accuracy']:.3f}") for r in reasons)


def _section(crafting: tuple, victim: tuple, control_jpeg: dict) -> dict:
    """A poison section (no intervals): crafting model (clean, protected, jpeg), mlp likewise."""
    def entry(clean, protected, jpeg):
        return {"clean_accuracy": clean, "protected_accuracy": protected, "peak_protected_accuracy": protected,
                "defenses": {"jpeg": {"accuracy": jpeg, "peak_accuracy": jpeg}}}

    sec = {"empirical": entry(*crafting), "victims": {"cnn": entry(*crafting), "mlp": entry(*victim)}}
    control = {"empirical": entry(crafting[0], crafting[0], control_jpeg["cnn"]),
               "victims": {"cnn": entry(crafting[0], crafting[0], control_jpeg["cnn"]),
                           "mlp": entry(victim[0], victim[0], control_jpeg["mlp"])}}
    return sec, control


def test_a_poison_that_stops_the_crafting_model_but_not_another_victim_reads_none():
    sec, control = _section((0.9, 0.1, 0.12), (0.8, 0.79, 0.3), {"cnn": 0.85, "mlp": 0.7})
    v = judge(sec, control, VerdictConfig(), "ops", crafting="cnn")
    assert v["level"] == "none"
    best = next(r for r in v["reasons"] if r.startswith("attacker's best"))
    assert "(undefended (mlp))" in best and "0.790" in best and "mlp's clean model (0.800)" in best
    # without the panel the same crafting-model numbers read strong-ish (partial: the suite is incomplete)
    alone = {"empirical": sec["empirical"]}
    assert judge(alone, {"empirical": control["empirical"]}, VerdictConfig(), "ops")["level"] == "partial"


def test_a_victims_defended_accuracy_is_read_against_its_own_clean_control_under_that_defense():
    # mlp under JPEG reaches 0.6; its clean control under JPEG 0.62 (0.97: none), its clean model 0.8 (0.75)
    sec, control = _section((0.9, 0.1, 0.12), (0.8, 0.1, 0.6), {"cnn": 0.85, "mlp": 0.62})
    v = judge(sec, control, VerdictConfig(), "ops", crafting="cnn")
    assert v["level"] == "none"
    assert any("jpeg (mlp) reaches 0.600 = 0.97 × the clean control under jpeg (0.620)" == r for r in v["reasons"])
    # no control under it: the victim's own clean model stands in, and the reasons say so
    del control["victims"]["mlp"]["defenses"]
    v = judge(sec, control, VerdictConfig(), "ops", crafting="cnn")
    assert v["level"] == "partial"  # 0.6 / 0.8 = 0.75
    assert any(r.startswith("jpeg on mlp compared with the clean model trained normally") for r in v["reasons"])


def test_replicates_give_each_victim_means_and_intervals():
    def sec(cnn, mlp):
        def e(p):
            return {"clean_accuracy": 0.9, "protected_accuracy": p, "peak_protected_accuracy": p,
                    "defenses": {"jpeg": {"accuracy": p + 0.1, "peak_accuracy": p + 0.1}}}

        return {"empirical": e(cnn), "victims": {"cnn": e(cnn), "mlp": e(mlp)}}

    out = combine([sec(0.1, 0.5), sec(0.2, 0.7)], [0, 1], 1000, 0.01)
    mlp = out["victims"]["mlp"]
    assert mlp["protected_accuracy"] == pytest.approx(0.6) and mlp["defenses"]["jpeg"]["accuracy"] == pytest.approx(0.7)
    lo, hi = mlp["protected_interval"]
    assert lo < 0.5 and hi > 0.7  # Student-t over two seeds 0.2 apart is wide
    assert [r["victims"]["mlp"]["protected_accuracy"] for r in out["replicates"]] == [0.5, 0.7]


def test_the_gate_fails_when_another_victim_learns_the_data(panel_run):
    tmp, _ = panel_run
    base = _report(tmp / "panel")
    rep = json.loads(json.dumps(base))
    mlp = rep["poisons"]["ops"]["victims"]["mlp"]
    mlp["protected_accuracy"] = rep["poisons"]["ops"]["replicates"][0]["victims"]["mlp"]["protected_accuracy"] = 0.99
    rows = {(r.poison, r.metric): r for r in compare(base, rep, tolerance=0.02)}
    assert rows[("ops", "victim mlp: protected_accuracy")].verdict == WEAKER
    assert rows[("ops", "victim mlp defense jpeg: accuracy")].verdict != WEAKER
    assert not any("victim cnn" in m for _, m in rows)  # the crafting model's are `empirical`'s rows
    assert rows[("ops", "protected_accuracy")].verdict != WEAKER


def test_plan_targets_read_the_attacker_best_over_every_victim():
    row = {"protected_accuracy": 0.1, "protected_interval": [0.08, 0.12], "defenses": {"jpeg": 0.2},
           "defense_intervals": {"jpeg": [0.18, 0.22]},
           "victims": {"mlp": {"protected_accuracy": 0.5, "protected_interval": [0.45, 0.55],
                               "defenses": {"jpeg": 0.3}, "defense_intervals": {"jpeg": [0.25, 0.35]}}}}
    assert attacker_best(row) == {"accuracy": 0.55, "by": "undefended (mlp)"}
    del row["victims"]
    assert attacker_best(row) == {"accuracy": 0.22, "by": "jpeg"}


def test_plan_with_a_panel_records_each_victim_per_budget(tmp_path):
    (tmp_path / "fast.yaml").write_text(FAST)
    out = tmp_path / "plan"
    assert main(["--quiet", "plan", "--poison", "random", "--budgets", "8/255", "--config", str(tmp_path / "fast.yaml"),
                 "--victims", "cnn,mlp", "--defense", "jpeg", "--samples", "20", "--executor", "serial",
                 "--out", str(out), "--cache-dir", str(tmp_path / "c")]) == 0
    plan = json.loads((out / "plan.json").read_text())
    row = plan["budgets"][0]
    assert plan["victims"]["architectures"] == ["cnn", "mlp"]
    assert set(row["victims"]) == {"mlp"} and set(row["victims"]["mlp"]["defenses"]) == {"jpeg"}
    assert row["attacker_best"]["accuracy"] >= row["victims"]["mlp"]["protected_interval"][1]


def test_audit_with_a_panel(tmp_path, capsys):
    from certify.data import load_split

    x, _, _ = load_split("digits:train")
    torch.save({"delta": torch.full_like(x, 2 / 255).permute(0, 2, 3, 1).contiguous()}, tmp_path / "delta.pt")
    (tmp_path / "fast.yaml").write_text(FAST)
    out = tmp_path / "out"
    assert main(["--quiet", "audit", "--release", f"delta:{tmp_path / 'delta.pt'}", "--clean", "digits:train",
                 "--test", "digits:test", "--config", str(tmp_path / "fast.yaml"), "--victims", "mlp",
                 "--defense", "", "--skip", "certify,scores,recovery", "--executor", "serial", "--out", str(out),
                 "--cache-dir", str(tmp_path / "c")]) == 0, capsys.readouterr().err
    report = _report(out)
    # a panel without the crafting model: the mlp alone is the panel, the cnn still trains (`empirical`)
    assert report["victims"]["architectures"] == ["mlp"]
    assert set(report["poisons"]["release"]["victims"]) == {"mlp"}


@pytest.mark.parametrize("args, config, message", [
    (["--victims", "cnn,vgg99"], "", "unknown model 'vgg99'; choose from: cnn, cnn16, mlp"),
    (["--victims", "cnn,,mlp"], "", "an empty item in 'cnn,,mlp'"),
    (["--victims", ""], "", "an empty item in ''"),
    (["--victims", "cnn,mlp,cnn"], "", "victims names cnn more than once"),
    (["--victims", ",".join(["cnn", "mlp", "cnn16"] * 3)], "", "number of victims must be at most 8"),
    (["--victims", "cnn,mlp"], "victim_train: {cnn61: {epochs: 2}}\n", "unknown model 'cnn61'"),
    (["--victims", "cnn,mlp"], "victim_train: {mlp: {epoch: 2}}\n", "unknown field 'epoch'"),
    (["--victims", "cnn,mlp"], "victim_train: {mlp: {epochs: 0}}\n", "epochs must be"),
    (["--victims", "cnn,mlp"], "victim_train: {mlp: [1]}\n", "must be a mapping"),
    (["--victims", "cnn,mlp"], "victim_train: {cnn: {epochs: 3}}\n", "is the crafting model"),
    (["--victims", "cnn,resnet18"], "", "model 'resnet18' needs images of at least 9x9"),
])
def test_bad_panels_are_one_line_and_write_nothing(tmp_path, capsys, args, config, message):
    (tmp_path / "c.yaml").write_text(FAST.replace("victim_train: {mlp: {epochs: 3, lr: 0.1}}\n", "") + config)
    out = tmp_path / "out"
    code = main(["run", "--config", str(tmp_path / "c.yaml"), "--poison", "random", *args, "--executor", "serial",
                 "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()
