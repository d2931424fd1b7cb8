"""The certification engine: draws depend only on (seed, j), serial = Ray, resume recomputes nothing."""
import numpy as np
import pytest
import torch

from certify import execution
from certify.cache import Cache
from certify.models import build_model
from certify.smoothing import draw_accuracies, draw_noise, trainable


@pytest.fixture(scope="module")
def job(digits):
    model = build_model("cnn", digits.shape, digits.num_classes, seed=1)
    return execution.DrawJob("cnn", digits.shape, digits.num_classes, model.state_dict(), 0.05, 7,
                             digits.x_test, digits.y_test, eval_batch=100, draws_per_pass=1, threads=1)


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


def test_batched_pass_matches_loop(job):
    m = job.model()
    loop = draw_accuracies(m, 0.05, 7, 0, 6, job.x, job.y, 100, draws_per_pass=1)
    batched = draw_accuracies(m, 0.05, 7, 0, 6, job.x, job.y, 100, draws_per_pass=3)
    assert np.allclose(loop, batched, atol=2 / len(job.y))


def test_serial_and_ray_identical_and_resume(job, tmp_path, ray_local):
    serial = execution.map_draws(job, 40, 10, executor="serial", workers=1, address=None,
                                 cache=Cache(tmp_path / "a"), key="draws-x")
    on_ray = execution.map_draws(job, 40, 10, executor="ray", workers=2, address=None,
                                 cache=Cache(tmp_path / "b"), key="draws-x")
    assert np.array_equal(serial, on_ray)
    one = execution.map_draws(job, 40, 10, executor="ray", workers=1, address=None,
                              cache=Cache(tmp_path / "c"), key="draws-x")
    assert np.array_equal(serial, one)


def test_resume_recomputes_nothing(job, tmp_path, monkeypatch):
    cache = Cache(tmp_path)
    first = execution.map_draws(job, 30, 10, executor="serial", workers=1, address=None, cache=cache, key="draws-y")
    # simulate an interrupted run: one chunk lost
    (cache.path("draws-y", "") / "0000010-0000020.npy").unlink()
    calls = []
    real = execution.Evaluator.run

    def counting(self, start, stop):
        calls.append((start, stop))
        return real(self, start, stop)

    monkeypatch.setattr(execution.Evaluator, "run", counting)
    again = execution.map_draws(job, 30, 10, executor="serial", workers=1, address=None, cache=cache, key="draws-y")
    assert calls == [(10, 20)]
    assert np.array_equal(first, again)
    calls.clear()
    execution.map_draws(job, 30, 10, executor="serial", workers=1, address=None, cache=cache, key="draws-y")
    assert calls == []


def test_inference_form_gives_the_same_outputs(digits):
    """BN folded into the preceding conv is exact algebra, and the pool rewrite is exact: same
    outputs as the model itself."""
    from certify.smoothing import InferenceForm
    from certify.training import TrainConfig, train

    model = build_model("cnn", digits.shape, digits.num_classes, seed=2)
    train(model, digits.x_train, digits.y_train, TrainConfig(epochs=2, batch_size=64, flip=False), seed=0)
    fast = InferenceForm(model)
    assert len(fast.pairs) == 3  # every conv of the small CNN is followed by its BN
    assert len(fast.pools) == 2
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
    from certify.smoothing import InferenceForm

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
    from certify.smoothing import MaxPoolReLU

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
            "from certify import execution\n"
            "execution.start_ray(None, 1)\n"
            "execution._wait_ray(None, 1)\n"
            "time.sleep(3)\n"
            "print('answer', ray.get(ray.remote(lambda: 7).remote(), timeout=60))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert "answer 7" in res.stdout, res.stderr[-2000:]


def test_serial_draws_restore_the_callers_thread_count(job, tmp_path):
    torch.set_num_threads(3)  # neither the job's 1 nor this machine's core count
    execution.map_draws(job, 10, 10, executor="serial", workers=1, address=None, cache=Cache(tmp_path), key="draws-t")
    assert torch.get_num_threads() == 3  # training after the draws keeps the run's setting
