"""The training loop: seeded (same seed, same weights), hooks called, history recorded."""
import torch

from certify.models import MODELS, build_model, count_parameters
from certify.training import TrainConfig, evaluate, flip_crop, train

CFG = TrainConfig(epochs=2, batch_size=64, lr=0.05, flip=False)


def small(digits, n=400):
    return digits.x_train[:n], digits.y_train[:n]


def test_same_seed_same_weights(digits):
    x, y = small(digits)
    a = build_model("cnn", digits.shape, 10, seed=5)
    b = build_model("cnn", digits.shape, 10, seed=5)
    ha = train(a, x, y, CFG, seed=9)
    hb = train(b, x, y, CFG, seed=9)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert ha == hb
    c = build_model("cnn", digits.shape, 10, seed=5)
    train(c, x, y, CFG, seed=10)
    assert not torch.equal(a.head.weight, c.head.weight)


def test_history_hooks_and_learning(digits):
    x, y = small(digits, 1000)
    model = build_model("cnn", digits.shape, 10, seed=0)
    seen, transformed = [], []

    def transform(xb, yb, gen):
        transformed.append(len(xb))
        return xb, yb

    hist = train(model, x, y, TrainConfig(epochs=3, batch_size=64, flip=False), seed=0,
                 x_test=digits.x_test, y_test=digits.y_test, batch_transform=transform,
                 epoch_callback=lambda e, m: seen.append(e))
    assert seen == [0, 1, 2]
    assert sum(transformed) == 3 * len(x)
    assert len(hist["test_accuracy"]) == 3 and hist["peak_test_accuracy"] == max(hist["test_accuracy"])
    assert hist["final_test_accuracy"] > 0.8  # digits are learned within a few epochs
    assert evaluate(model, digits.x_test, digits.y_test) == hist["final_test_accuracy"]


def test_loss_override_is_used(digits):
    x, y = small(digits, 128)
    model = build_model("cnn", digits.shape, 10, seed=0)
    calls = []

    def loss(m, xb, yb, gen):
        calls.append(1)
        return torch.nn.functional.cross_entropy(m(xb), yb)

    train(model, x, y, TrainConfig(epochs=1, batch_size=64, flip=False), seed=0, loss_fn=loss)
    assert len(calls) == 2


def test_flip_crop_keeps_shape_and_pixels():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 6, 6)
    out = flip_crop(x, g, flip=True, crop=0)
    for i in range(8):
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(2))
    cropped = flip_crop(x, g, flip=False, crop=2)
    assert cropped.shape == x.shape


def test_models_expose_features():
    for name in MODELS.names():
        m = build_model(name, (3, 32, 32), 10, seed=0).eval()
        x = torch.rand(2, 3, 32, 32)
        f = m.features(x)
        assert f.dim() == 2 and torch.allclose(m.head(f), m(x))
        assert count_parameters(m) > 0
    assert 6000 < count_parameters(build_model("cnn", (3, 32, 32), 10, 0)) < 7000


def test_rwp_surrogate_fine_tunes_the_victim_it_is_given(digits):
    """init `victim`: RWP fine-tuning starts from the weights it is handed (the normally trained
    model) and stays near them; the recipe says so, and from scratch it says the switch point."""
    from certify.certificate.config import SurrogateConfig
    from certify.models import trainable
    from certify.certificate.surrogate import recipe, train_surrogate

    x, y = digits.x_train, digits.y_train
    cfg = TrainConfig(epochs=4, batch_size=64, flip=False)
    victim = build_model("cnn", digits.shape, digits.num_classes, seed=0)
    train(victim, x, y, cfg, seed=0)
    other = build_model("cnn", digits.shape, digits.num_classes, seed=1)
    train(other, x, y, cfg, seed=1)
    warm = build_model("cnn", digits.shape, digits.num_classes, seed=5)
    warm.load_state_dict(victim.state_dict())
    sur_cfg = SurrogateConfig(epochs=1)
    train_surrogate(warm, x, y, TrainConfig(**{**cfg.__dict__, "lr": 0.005}), sur_cfg, 0.02, seed=3)

    def flat(m):
        return torch.cat([p.flatten() for p in trainable(m).values()])

    moved, apart = (flat(warm) - flat(victim)).norm(), (flat(other) - flat(victim)).norm()
    assert 0 < moved < 0.2 * apart
    before = evaluate(victim, digits.x_test, digits.y_test)
    assert before > 0.8 and evaluate(warm, digits.x_test, digits.y_test) > before - 0.05
    assert recipe(sur_cfg, 0.02) == {"kind": "rwp", "init": "victim", "levels": [0.0, 0.01, 0.02], "epochs": 1,
                                     "draws_per_level": 1}
    assert recipe(SurrogateConfig(init="scratch"), 0.02)["switch_fraction"] == 0.2


def test_victim_records_its_training_accuracy_for_the_report(digits):
    """The victim's accuracy on its whole un-augmented training set reaches the empirical section:
    a low number there means the victim cannot fit its data, whatever the poison."""
    import dataclasses

    import jsonschema

    from certify.context import ModelSpec
    from certify.report.schema import EMPIRICAL
    from certify.victims import empirical_section, train_task

    spec, cfg = ModelSpec("cnn", tuple(digits.shape), 10), TrainConfig(epochs=3, batch_size=64, flip=False)
    x, y = digits.x_train, digits.y_train
    shuffled = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]

    def victim(labels):
        art = train_task(dataclasses.replace(digits, y_train=labels), {"released": x}, seed=0, training=cfg, checkpoints=False, desc="t", model=spec,
                         device="cpu")
        assert art["train_accuracy"] == evaluate(spec.load(art["state"]), x, labels)
        return art

    clean, noise = victim(y), victim(shuffled)
    assert clean["train_accuracy"] > 0.9 and noise["train_accuracy"] < 0.5  # shuffled labels are not fit in 3 epochs
    section = empirical_section(clean, noise, {})
    assert (section["clean_train_accuracy"], section["protected_train_accuracy"]) == (
        clean["train_accuracy"], noise["train_accuracy"])
    jsonschema.validate(section, EMPIRICAL)
