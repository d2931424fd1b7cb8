"""The victim panel (issue 26): ResNet-20, the small VGG and the tiny ViT, their recipes and listing."""
import dataclasses

import pytest
import torch

from certify.cli import main
from certify.errors import UserError
from certify.models import MODELS, build_model, count_parameters, victim_training
from certify.training import TrainConfig

PANEL = ["resnet20", "vgg-small", "vit-tiny"]


def test_resnet20_has_the_papers_size():
    # He et al. report 0.27 M; the 1x1-conv shortcuts add ~2.7 k to it
    assert 260_000 <= count_parameters(build_model("resnet20", (3, 32, 32), 10, 0)) <= 280_000


@pytest.mark.parametrize("arch", PANEL)
def test_features_and_head_compose_to_forward_with_one_logit_per_class(arch):
    model = build_model(arch, (3, 16, 16), 7, 0).eval()
    x = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(x)
        features = model.features(x)
        assert logits.shape == (5, 7)
        assert features.shape == (5, model.head.in_features)
        torch.testing.assert_close(model.head(features), logits)
    assert isinstance(model.head, torch.nn.Linear)


@pytest.mark.parametrize("arch", PANEL)
def test_a_grayscale_batch_trains(arch):
    model = build_model(arch, (1, 8, 8), 3, 0).train()
    model(torch.randn(4, 1, 8, 8)).logsumexp(1).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_the_vit_refuses_images_its_patches_do_not_tile():
    for shape, sizes in [((3, 32, 28), "32x28"), ((3, 30, 30), "30x30")]:
        with pytest.raises(UserError, match=rf"'vit-tiny'.*{sizes}"):
            build_model("vit-tiny", shape, 10, 0)


def test_the_same_seed_builds_the_same_weights():
    a, b = (build_model("resnet20", (3, 8, 8), 10, 3) for _ in range(2))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("arch", PANEL)
def test_each_panel_model_has_a_recipe_of_training_fields_without_flip(arch):
    recipe = dict(MODELS.get(arch).recipe)
    assert recipe, f"{arch} documents no recipe"
    assert set(recipe) <= {f.name for f in dataclasses.fields(TrainConfig)}
    assert "flip" not in recipe  # the dataset's (natural images only), never the architecture's
    TrainConfig(**recipe).validate(arch)


@pytest.mark.parametrize("arch", ["cnn", "cnn16", "mlp", "resnet18"])
def test_the_older_models_keep_the_runs_training(arch):
    base = TrainConfig(epochs=7)
    assert victim_training(arch, base) == base


def test_victim_training_is_the_run_then_the_recipe_then_the_users_overrides():
    base = TrainConfig(epochs=3, lr=0.2, flip=False, eval_batch=100)
    recipe = dict(MODELS.get("resnet20").recipe)
    got = victim_training("resnet20", base, {"lr": 0.01})
    assert got == dataclasses.replace(base, **{**recipe, "lr": 0.01})
    assert got.flip is False and got.eval_batch == 100  # what the recipe leaves is the run's
    assert base.lr == 0.2  # the run's own config is not changed


def test_certify_list_shows_the_panel(capsys):
    assert main(["list"]) == 0
    models = capsys.readouterr().out.split("models:")[1]
    for arch in PANEL:
        assert f"  {arch} " in models


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_the_small_cnn_trains_bit_for_bit_as_conv_bn_relu_pool(layout):
    """SmallCNN pools before its ReLUs and sums-then-divides for its global mean (both for speed): the
    same logits and SGD-trained weights as the textbook order (ReLU then max-pool, AdaptiveAvgPool2d +
    Flatten) built from the same modules."""
    from torch import nn

    model = build_model("cnn", (3, 16, 16), 10, seed=3)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    b = model.body
    textbook = nn.Sequential(b[0], b[1], b[3], b[2], b[4], b[5], b[7], b[6], b[8], b[9], b[10],
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), model.head)
    twin = build_model("cnn", (3, 16, 16), 10, seed=0)
    twin.load_state_dict(start)
    g = torch.Generator().manual_seed(0)
    xs = torch.rand(3, 32, 3, 16, 16, generator=g)
    ys = torch.randint(0, 10, (3, 32), generator=g)
    for net in (twin, textbook):  # textbook trains model's own modules
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        for x, y in zip(xs, ys):
            loss = torch.nn.functional.cross_entropy(net(x.contiguous(memory_format=layout)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert not torch.equal(model.head.weight, start["head.weight"])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in twin.state_dict().items())
    twin.eval(), textbook.eval()
    with torch.no_grad():
        assert torch.equal(twin(xs[0]), textbook(xs[0]))
