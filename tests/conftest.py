import pytest
import torch


@pytest.fixture(scope="session")
def ray_local():
    """Ray started once per test session with 2 CPUs (as on the CI machine)."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def digits():
    from certify.data import load_dataset

    return load_dataset("digits", seed=0)


@pytest.fixture(autouse=True)
def _threads():
    """Each test runs with 2 torch threads (as on the CI machine); the count is restored after it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)
