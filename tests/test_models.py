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
