import copy

import pytest
import torch

from attacks.recovery import RECOVERY, RecoveryInputs, attacker_split
from attacks.recovery._common import distance, project
from certify.errors import UserError
from certify.models import build_model
from certify.models import trainable


@pytest.fixture(scope="module")
def toy(digits):
    """A random-init CNN (a model that learned nothing), the attacker's 20 % and the test set."""
    model = build_model("cnn", (1, 8, 8), 10, seed=0).eval()
    xa, ya = attacker_split(digits.x_train, digits.y_train, 0.2, seed=0)
    return model, xa, ya, digits.x_test, digits.y_test


def _rand_params(seed):
    g = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(5, 3, generator=g), "b": torch.randn(7, generator=g)}


def test_registered():
    assert {"pgd", "greedy"} <= set(RECOVERY.names())


@pytest.mark.parametrize("eta", [0.01, 0.5, 3.0, 100.0])
def test_project_ball_never_leaves_and_keeps_inside(eta):
    origin, params = _rand_params(0), _rand_params(1)
    saved = copy.deepcopy(params), copy.deepcopy(origin)
    out = project(params, origin, eta, "ball")
    d0 = distance(params, origin)
    assert distance(out, origin) <= eta + 1e-5
    if d0 <= eta:
        assert all(torch.equal(out[n], params[n]) for n in params)
    else:
        assert distance(out, origin) == pytest.approx(eta, rel=1e-5)
        # the same direction
        cos = sum(float(((out[n] - origin[n]) * (params[n] - origin[n])).sum()) for n in params)
        assert cos / (distance(out, origin) * d0) == pytest.approx(1.0, abs=1e-5)
    assert all(torch.equal(params[n], saved[0][n]) and torch.equal(origin[n], saved[1][n]) for n in params)


@pytest.mark.parametrize("eta", [0.01, 3.0, 100.0])
def test_project_sphere_is_exact(eta):
    origin, params = _rand_params(0), _rand_params(1)
    assert distance(project(params, origin, eta, "sphere"), origin) == pytest.approx(eta, rel=1e-5)


def test_project_bad_constraint():
    with pytest.raises(UserError):
        project(_rand_params(0), _rand_params(1), 1.0, "cube")


def test_attacker_split_stratified_and_seeded(digits):
    x, y = digits.x_train, digits.y_train
    xa, ya = attacker_split(x, y, 0.2, seed=0)
    xb, yb = attacker_split(x, y, 0.2, seed=0)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert abs(len(ya) - 0.2 * len(y)) <= 10
    full, part = torch.bincount(y, minlength=10).float(), torch.bincount(ya, minlength=10).float()
    assert torch.all((part - 0.2 * full).abs() <= 1)
    xc, _ = attacker_split(x, y, 0.2, seed=1)
    assert not torch.equal(xa, xc)
    with pytest.raises(UserError):
        attacker_split(x, y, 0.0, seed=0)


@pytest.mark.parametrize("constraint,bn", [("ball", "frozen"), ("sphere", "re-estimated")])
def test_pgd_final_weights_respect_constraint(toy, constraint, bn):
    from attacks.recovery.pgd import recover_one

    model, xa, ya, _, _ = toy
    p = RECOVERY.params("pgd", {"epochs": 2, "lr": 0.05, "constraint": constraint, "bn": bn})
    eta = 0.3
    m = recover_one(model, xa, ya, eta, p, seed=0)
    d = distance(trainable(m), trainable(model))
    if constraint == "ball":
        assert d <= eta + 1e-5
    else:
        assert d == pytest.approx(eta, rel=1e-4)
    bn_changed = any(not torch.equal(a, b) for (n, a), (_, b) in zip(m.named_buffers(), model.named_buffers())
                     if "running" in n)
    assert bn_changed == (bn == "re-estimated")


@pytest.mark.parametrize("method", ["pgd", "greedy"])
def test_recover_leaves_model_unchanged_and_is_seeded(toy, method):
    model = toy[0]
    state = copy.deepcopy(model.state_dict())
    overrides = {"epochs": 1} if method == "pgd" else {"trials": 5}
    p = RECOVERY.params(method, overrides)
    fn = RECOVERY.get(method).factory
    r1 = fn(RecoveryInputs(*toy, [0.1, 1.0], 0), p)
    r2 = fn(RecoveryInputs(*toy, [0.1, 1.0], 0), p)
    assert [r["eta"] for r in r1] == [0.1, 1.0]
    assert all(0 <= r["accuracy"] <= 1 for r in r1)
    assert r1 == r2
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_greedy_respects_norm(toy):
    from attacks.recovery.greedy import search

    model, xa, ya, _, _ = toy
    p = RECOVERY.params("greedy", {"trials": 4})
    _, _, best = search(model, xa, ya, [0.05, 2.0], p, seed=0)
    origin = trainable(model)
    for eta, (w, acc) in zip([0.05, 2.0], best):
        assert distance(w, origin) == pytest.approx(eta, rel=1e-4)
        assert 0 <= acc <= 1


def test_pgd_larger_eta_recovers_more(digits):
    """A label-shifted model (the toy 'protected' model: ~0 clean accuracy) is recovered within a
    larger ball, not within a tiny one. (Larger still, e.g. eta = 5, frozen-BN SGD at this lr can
    collapse to one class: projected SGD is not monotone in eta, so the check uses eta = 1.)"""
    from certify.training import TrainConfig, train

    model = build_model("cnn", (1, 8, 8), 10, seed=0)
    train(model, digits.x_train[:500], (digits.y_train[:500] + 1) % 10,
          TrainConfig(epochs=3, batch_size=32, flip=False), seed=0)
    xa, ya = attacker_split(digits.x_train, digits.y_train, 0.2, seed=0)
    p = RECOVERY.params("pgd", {"epochs": 5, "lr": 0.05, "batch": 32})
    tiny, large = RECOVERY.get("pgd").factory(
        RecoveryInputs(model, xa, ya, digits.x_test, digits.y_test, [1e-3, 1.0], 0), p)
    assert large["accuracy"] >= tiny["accuracy"] + 0.1
    assert large["attacker_accuracy"] >= tiny["attacker_accuracy"] + 0.1  # its own split shows it too


def test_bad_params_raise_user_error():
    for name, bad in [("pgd", {"epochs": 0}), ("pgd", {"constraint": "cube"}), ("pgd", {"bn": "x"}),
                      ("pgd", {"lr": -1.0}), ("greedy", {"trials": 0}), ("greedy", {"scale": 0.0}),
                      ("greedy", {"bn": "frozen"})]:
        with pytest.raises(UserError):
            RECOVERY.params(name, bad)
    model = build_model("cnn", (1, 8, 8), 10, seed=0)
    x = torch.zeros(4, 1, 8, 8)
    y = torch.zeros(4, dtype=torch.long)
    for bad in (-1.0, float("nan"), True, "1"):
        with pytest.raises(UserError, match="every eta"):
            RecoveryInputs(model, x, y, x, y, [bad], 0)


def test_early_stop_picks_the_attackers_split_peak_not_the_test_peak():
    from certify.curves import early_stop

    curve = [{"eta": 0.01, "eta_over_sigma": 0.5, "accuracy": 0.2, "attacker_accuracy": 0.6},
             {"eta": 0.1, "eta_over_sigma": 5.0, "accuracy": 0.45, "attacker_accuracy": 0.5},
             {"eta": 0.4, "eta_over_sigma": 20.0, "accuracy": 0.1, "attacker_accuracy": 0.6}]
    assert early_stop(curve) == {"index": 0, "eta": 0.01, "eta_over_sigma": 0.5, "accuracy": 0.2,
                                 "attacker_accuracy": 0.6, "on": "attacker"}  # first of equals
    test_only = [{k: v for k, v in p.items() if k != "attacker_accuracy"} for p in curve]
    assert early_stop(test_only)["index"] == 1 and early_stop(test_only)["on"] == "test"
    assert early_stop([]) is None


def test_pgd_records_the_attackers_own_accuracy(toy):
    from certify.training import evaluate

    model, xa, ya, xt, yt = toy
    p = RECOVERY.params("pgd", {"epochs": 1, "lr": 0.05})
    curve = RECOVERY.get("pgd").factory(RecoveryInputs(model, xa, ya, xt, yt, [0.0, 1.0], seed=0), p)
    assert curve[0]["attacker_accuracy"] == evaluate(model, xa, ya)  # η = 0: the start itself
    assert 0 <= curve[1]["attacker_accuracy"] <= 1
