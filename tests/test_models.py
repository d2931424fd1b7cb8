"""The victim panel (issue 26): ResNet-20, the small VGG and the tiny ViT."""
import pytest
import torch

from certify.cli import main
from certify.errors import UserError
from certify.models import build_model, count_parameters

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


def test_certify_list_shows_the_panel(capsys):
    assert main(["list"]) == 0
    models = capsys.readouterr().out.split("models:")[1]
    for arch in PANEL:
        assert f"  {arch} " in models
