"""Config: defaults <- dataset defaults <- YAML <- flags, and one clear error per bad value."""
import pytest

from attacks.base import POISONS
from attacks.miue import MIUEParams
from attacks.recovery import RECOVERY
from attacks.recovery.pgd import PGDRecoveryParams
from certify.config import PROFILE_DEFAULTS, RunConfig, load_config
from certify.data import DATASETS
from certify.errors import UserError
from defenses.base import DEFENSES


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return str(p)


def test_defaults_and_dataset_table():
    cfg = load_config()
    assert cfg.dataset == "cifar10-mini" and cfg.model == "cnn" and cfg.sigma == "auto"
    assert cfg.q == 0.9 and cfg.alpha == 0.01 and cfg.samples == 1000
    digits = load_config(overrides={"dataset": "digits"})
    assert digits.train.flip is False and digits.train.batch_size == 64


def test_yaml_then_flags(tmp_path):
    path = write(tmp_path, "seed: 3\nq: 0.5\ntrain:\n  epochs: 4\npoisons: [random]\n")
    cfg = load_config(path, {"q": 0.7})
    assert cfg.seed == 3 and cfg.q == 0.7 and cfg.train.epochs == 4 and cfg.poisons == ["random"]
    assert cfg.train.lr == RunConfig().train.lr  # the rest of the section keeps its defaults


@pytest.mark.parametrize("text, message", [
    ("seed: [1\n", "malformed YAML"),
    ("colour: red\n", "unknown key 'colour'"),
    ("train:\n  epoch: 3\n", "unknown key 'train.epoch'"),
    ("seed: one\n", "seed must be an integer"),
    ("q: 1.5\n", "q must be in (0, 1)"),
    ("alpha: 0\n", "alpha must be in (0, 1)"),
    ("sigma: -0.1\n", "sigma must be > 0"),
    ("sigma: often\n", "sigma must be a positive number or 'auto'"),
    ("samples: 0\n", "samples must be a positive integer"),
    ("eta_sigma: [0.1, -1]\n", "eta_sigma must be >= 0"),
    ("executor: threads\n", "executor must be one of ray, serial"),
    ("train:\n  epochs: 0\n", "epochs must be > 0"),
    ("- a\n- b\n", "top level must be a mapping"),
    ("model: vgg99\n", "unknown model 'vgg99'"),
    ("defenses: [magic]\n", "unknown defense 'magic'"),
    ("skip: [everything]\n", "skip must be one of"),
])
def test_bad_config_is_one_line(tmp_path, text, message):
    with pytest.raises(UserError) as e:
        load_config(write(tmp_path, text))
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_file():
    with pytest.raises(UserError, match="no such file"):
        load_config("/nonexistent/c.yaml")


def test_yaml_is_safe(tmp_path):
    with pytest.raises(UserError):  # python tags are not constructed
        load_config(write(tmp_path, "seed: !!python/object/apply:os.system ['true']\n"))


@pytest.mark.parametrize("text, message", [
    ("poison_params:\n  miue: {rounds: x}\n", "poison miue: rounds must be an integer, got 'x'"),
    ("recovery_params:\n  pgd: {bn: 1}\n", "recovery attack pgd: bn must be str, got 1"),
    ("poison_params:\n  random: 5\n", "config: poison_params.random must be a mapping, got 5"),
    ("defense_params:\n  jpeg: [1]\n", "config: defense_params.jpeg must be a mapping, got [1]"),
])
def test_method_parameters_are_type_checked_like_the_run_config(tmp_path, text, message):
    with pytest.raises(UserError) as e:
        load_config(write(tmp_path, text))
    assert str(e.value) == message


def test_registry_params_rejects_a_non_mapping():
    with pytest.raises(UserError, match="poison random: parameters must be a mapping, got 5"):
        POISONS.params("random", 5)


def test_a_methods_own_dataset_overrides():
    assert POISONS.params("miue", dataset="digits").rounds == 2
    assert POISONS.params("miue", dataset="cifar10-mini").rounds == MIUEParams.rounds
    mine = POISONS.params("miue", {"rounds": 4}, dataset="digits")  # the user's value wins
    assert (mine.rounds, mine.steps) == (4, 2)


def test_a_methods_own_profile_overrides():
    assert RECOVERY.params("pgd", profile="reference").epochs == 60
    assert RECOVERY.params("pgd", profile="quick").epochs == PGDRecoveryParams.epochs
    assert RECOVERY.params("pgd", {"epochs": 5}, dataset="digits", profile="reference").epochs == 5


def test_every_declared_override_builds():
    """Each Params class's tables name real datasets/profiles and real fields of valid values."""
    for registry in (POISONS, DEFENSES, RECOVERY):
        for entry in registry.entries():
            for dataset in getattr(entry.params, "dataset_defaults", {}):
                assert dataset in DATASETS.names()
                registry.params(entry.name, dataset=dataset)
            for profile in getattr(entry.params, "profile_defaults", {}):
                assert profile in PROFILE_DEFAULTS
                registry.params(entry.name, profile=profile)
