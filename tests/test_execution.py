"""The certification engine: draws depend only on (seed, j), serial = Ray, resume recomputes nothing."""
import numpy as np
import pytest
import torch

from certify.cache import Cache
from certify.certificate import certify_weights
from certify.certificate.draws import draw_accuracies, draw_noise
from certify.config import RunConfig
from certify.context import ModelSpec, RunContext
from certify.models import build_model, trainable


class Job:
    """A model and the digits test set, as the draws see them."""

    def __init__(self, digits):
        self.spec = ModelSpec("cnn", digits.shape, digits.num_classes)
        self.state = build_model("cnn", digits.shape, digits.num_classes, seed=1).state_dict()
        self.x, self.y, self.digits = digits.x_test, digits.y_test, digits

    def model(self):
        return self.spec.load(self.state)

    def certify(self, cache_dir, n, chunk, executor="serial"):
        cfg = RunConfig(samples=n, executor=executor, seed=7)
        cfg.smoothing.chunk, cfg.smoothing.eval_batch = chunk, 100
        ctx = RunContext(cfg, self.digits, Cache(cache_dir), self.spec, "cpu", "data-digits", "t")
        ctx.graph.const(ctx.data_key, self.digits)
        return certify_weights(ctx, self.state, 0.05)[0]


@pytest.fixture(scope="module")
def job(digits):
    return Job(digits)


def test_noise_depends_only_on_seed_and_index(job):
    params = trainable(job.model())
    a = draw_noise(params, 7, 12)
    b = draw_noise(params, 7, 12)
    c = draw_noise(params, 7, 13)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not torch.equal(a["head.weight"], c["head.weight"])


def test_chunking_does_not_change_draws(job):
    m = job.model()
    whole = draw_accuracies(m, 0.05, 7, 0, 12, job.x, job.y, 100)
    parts = np.concatenate([draw_accuracies(m, 0.05, 7, lo, hi, job.x, job.y, 100) for lo, hi in [(0, 5), (5, 12)]])
    assert np.array_equal(whole, parts)
    assert whole.std() > 0  # the draws really differ


def test_weights_not_drifted(job):
    m = job.model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    draw_accuracies(m, 0.5, 7, 0, 3, job.x, job.y, 100)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


@pytest.fixture(scope="module")
def trained(digits):
    """The small CNN trained briefly: its draws' predictions are not near-constant."""
    from certify.training import TrainConfig, train

    model = build_model("cnn", digits.shape, digits.num_classes, seed=2)
    train(model, digits.x_train, digits.y_train, TrainConfig(epochs=2, batch_size=64, flip=False), seed=0)
    return model


@pytest.mark.parametrize("seed", [3, 11])
@pytest.mark.parametrize("per_pass, eval_batch, parts", [
    (4, 100, [(0, 14)]),
    (8, 64, [(0, 5), (5, 14)]),  # a chunk shorter than a pass
    (3, 359, [(0, 7), (7, 9), (9, 14)]),  # a pass over every image at once
])
def test_stacked_pass_equals_loop(trained, digits, seed, per_pass, eval_batch, parts):
    """Draws stacked into one pass give the loop's accuracies exactly, however they are chunked."""
    x, y = digits.x_test, digits.y_test
    loop = draw_accuracies(trained, 0.02, seed, 0, 14, x, y, 100)
    stacked = np.concatenate([draw_accuracies(trained, 0.02, seed, lo, hi, x, y, eval_batch, per_pass)
                              for lo, hi in parts])
    assert np.array_equal(loop, stacked)
    assert loop.std() > 0 and loop.mean() > 0.5  # distinct draws of a model that learned something


class Chain(torch.nn.Module):
    """A chain with what the small CNN lacks: a bias-free grouped conv, an unfolded conv, a 3x3
    pool, a flatten of 2x2 maps, a hidden linear and a bias-free head."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.body = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1),
                                  nn.Conv2d(6, 8, 3, padding=1, groups=2, bias=False), nn.BatchNorm2d(8),
                                  nn.ReLU(), nn.Conv2d(8, 8, 1), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                                  nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 10, bias=False))

    def forward(self, x):
        return self.body(x)


@pytest.mark.parametrize("arch", ["cnn", "mlp", "chain"])
def test_stacked_logits_are_each_draws_logits(digits, arch):
    from certify.certificate.draws import InferenceForm, perturbed

    torch.manual_seed(0)
    model = (Chain() if arch == "chain" else build_model(arch, digits.shape, digits.num_classes, seed=0)).eval()
    fast = InferenceForm(model)
    params, buffers = trainable(model), dict(model.named_buffers())
    states = [fast.state(perturbed(params, 0.1, 5, j), buffers) for j in range(3)]
    with torch.no_grad():
        out = fast.stacked.logits(fast.stacked.weights([p for p, _ in states]), digits.x_test[:50], 3)
        for k, state in enumerate(states):
            assert torch.allclose(out[k], torch.func.functional_call(fast.module, state, (digits.x_test[:50],)),
                                  atol=1e-5)
    assert out.shape == (3, 50, 10) and not torch.allclose(out[0], out[1])


class Residual(torch.nn.Module):
    """Not a chain (a skip connection): its draws take the loop or vmap."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 3, padding=1)
        self.head = torch.nn.Linear(4, 10)

    def forward(self, x):
        h = torch.relu(self.conv1(x))
        return self.head((h + self.conv2(h)).mean((2, 3)))


def test_which_models_stack(digits):
    from certify.certificate.draws import InferenceForm

    class SharedGroups(torch.nn.Module):  # a grouped first conv would mix draws on the shared input
        def __init__(self):
            super().__init__()
            self.conv, self.head = torch.nn.Conv2d(2, 4, 3, groups=2), torch.nn.Linear(4, 3)

        def forward(self, x):
            return self.head(self.conv(x).mean((2, 3)))

    for arch in ["cnn", "cnn16", "mlp", "vgg-small"]:
        assert InferenceForm(build_model(arch, (3, 32, 32), 10, seed=0)).stacked is not None, arch
    assert InferenceForm(Chain()).stacked is not None
    for model in [build_model("resnet20", (3, 32, 32), 10, seed=0), Residual(), SharedGroups()]:
        assert InferenceForm(model).stacked is None


def test_other_models_loop_or_vmap(digits):
    """A model that does not stack loops on the CPU whatever draws_per_pass says; the vmap pass
    (GPUs) agrees with the loop."""
    from certify.certificate.draws import InferenceForm, _vmap_correct, perturbed

    model = Residual().eval()
    x, y = digits.x_test, digits.y_test
    loop = draw_accuracies(model, 0.5, 7, 0, 6, x, y, 100)
    assert np.array_equal(loop, draw_accuracies(model, 0.5, 7, 0, 6, x, y, 100, draws_per_pass=3))
    fast = InferenceForm(model)
    states = [fast.state(perturbed(trainable(model), 0.5, 7, j), {}) for j in range(6)]
    with torch.no_grad():
        batched = _vmap_correct(fast.module, states, x, y, 100).numpy() / len(y)
    assert np.allclose(loop, batched, atol=2 / len(y)) and loop.std() > 0


def test_serial_and_ray_identical_and_resume(job, tmp_path, ray_local):
    serial = job.certify(tmp_path / "a", 40, 10)
    on_ray = job.certify(tmp_path / "b", 40, 10, executor="ray")
    assert np.array_equal(serial, on_ray) and serial.std() > 0
    direct = draw_accuracies(job.model(), 0.05, job_seed(), 0, 40, job.x, job.y, 100)
    assert np.array_equal(serial, direct)  # the chunk tasks are the draws, in draw order


def job_seed():
    from certify.seeding import derive

    return derive(7, "draws")


def test_resume_recomputes_nothing(job, tmp_path, monkeypatch):
    import certify.certificate as cert

    first = job.certify(tmp_path, 30, 10)
    chunks = sorted((tmp_path / "draws").glob("draws-*.pt"))
    assert len(chunks) == 3
    chunks[1].unlink()  # an interrupted run: one chunk lost
    calls = []
    real = cert.draw_accuracies

    def counting(model, sigma, seed, start, stop, *args):
        calls.append((start, stop))
        return real(model, sigma, seed, start, stop, *args)

    monkeypatch.setattr(cert, "draw_accuracies", counting)
    again = job.certify(tmp_path, 30, 10)
    assert len(calls) == 1 and calls[0][1] - calls[0][0] == 10
    assert np.array_equal(first, again)
    calls.clear()
    job.certify(tmp_path, 30, 10)
    assert calls == []


def test_inference_form_gives_the_same_outputs(digits):
    """BN folded into the preceding conv is exact algebra, and the pool rewrite is exact: same
    outputs as the model itself."""
    from certify.certificate.draws import InferenceForm
    from certify.training import TrainConfig, train

    model = build_model("cnn", digits.shape, digits.num_classes, seed=2)
    train(model, digits.x_train, digits.y_train, TrainConfig(epochs=2, batch_size=64, flip=False), seed=0)
    fast = InferenceForm(model)
    assert len(fast.pairs) == 3  # every conv of the small CNN is followed by its BN
    assert len(fast.pools) == 2
    # the CNN pools before its ReLUs: both ReLUs after a pool are absorbed, the last one stays
    assert sum(isinstance(m, torch.nn.ReLU) for m in fast.module.modules()) == 1
    params = {k: v for k, v in trainable(model).items()}
    buffers = dict(model.named_buffers())
    with torch.no_grad():
        ref = model.eval()(digits.x_test)
        out = torch.func.functional_call(fast.module, fast.state(params, buffers), (digits.x_test,))
    assert torch.allclose(ref, out, atol=1e-4)
    # a trained model: the comparison above is not between two near-constant outputs
    assert (ref.argmax(1) == digits.y_test).float().mean() > 0.8


def test_inference_form_leaves_shared_modules_alone():
    """A ReLU module called at two places (as torchvision's ResNet does) must not be absorbed into
    the pool after one of them: the other call site would lose its ReLU."""
    from certify.certificate.draws import InferenceForm

    class Shared(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.relu, self.pool = torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2)
            self.head = torch.nn.Linear(4 * 4 * 4, 3)

        def forward(self, x):
            h = self.pool(self.relu(self.conv(x)))
            return self.relu(self.head(h.flatten(1)))  # the same ReLU again

    model = Shared().eval()
    fast = InferenceForm(model)
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    params = {k: v.detach() for k, v in model.named_parameters()}
    with torch.no_grad():
        out = torch.func.functional_call(fast.module, fast.state(params, {}), (x,))
        assert torch.equal(out, model(x))
    assert (out >= 0).all()  # the head's ReLU is still there
    assert fast.pools == ["pool"] and isinstance(fast.module.relu, torch.nn.ReLU)


@pytest.mark.parametrize("size", [(8, 8), (7, 9)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_maxpool_relu_is_bit_identical_to_pool_then_relu(size, layout):
    from certify.certificate.draws import MaxPoolReLU

    h = torch.randn(3, 5, *size, generator=torch.Generator().manual_seed(0)).contiguous(memory_format=layout)
    ref = torch.relu(torch.nn.functional.max_pool2d(torch.relu(h), 2))
    assert torch.equal(MaxPoolReLU(relu=True)(h), ref)
    assert torch.equal(MaxPoolReLU(relu=False)(h), torch.nn.functional.max_pool2d(h, 2))


@pytest.mark.slow
def test_ray_started_in_the_background_survives_its_starter_thread():
    """Ray's daemons get a parent-death signal when the thread that spawned them exits; the
    background start must keep that thread alive, or the local cluster dies seconds later."""
    import subprocess
    import sys

    code = ("import time, ray\n"
            "from certify import cluster\n"
            "cluster.start(None, 1)\n"
            "cluster.connect(None, 1, 60)\n"
            "time.sleep(3)\n"
            "print('answer', ray.get(ray.remote(lambda: 7).remote(), timeout=60))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert "answer 7" in res.stdout, res.stderr[-2000:]


def test_serial_tasks_restore_the_callers_thread_count(job, tmp_path):
    torch.set_num_threads(3)  # neither the task's 1 nor this machine's core count
    job.certify(tmp_path, 10, 10)
    assert torch.get_num_threads() == 3  # work after a task keeps the caller's setting
