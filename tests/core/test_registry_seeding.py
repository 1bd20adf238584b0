import pytest

from fedloom.algorithms import ALGORITHMS
from fedloom.errors import ConfigError
from fedloom.registry import Registry
from fedloom.seeding import derive_seed, torch_generator


def test_names_are_case_insensitive() -> None:
    assert ALGORITHMS.get("FedAvg") is ALGORITHMS.get("fedavg")
    assert ALGORITHMS.get("FEDAVG_FT") is ALGORITHMS.get("fedavg-ft")


def test_unknown_name_lists_choices_and_suggests() -> None:
    with pytest.raises(ConfigError) as err:
        ALGORITHMS.get("fedprx")
    message = str(err.value)
    assert "fedavg" in message and "fedprox" in message and "Did you mean 'fedprox'" in message


def test_double_registration_is_refused() -> None:
    reg: Registry[object] = Registry("thing")
    reg.register("a")(int)
    with pytest.raises(ValueError):
        reg.register("A")(float)


def test_streams_depend_on_every_coordinate_and_nothing_else() -> None:
    base = derive_seed(1, 2, 3, "train")
    assert base == derive_seed(1, 2, 3, "train")
    others = {derive_seed(2, 2, 3, "train"), derive_seed(1, 3, 3, "train"), derive_seed(1, 2, 4, "train"),
              derive_seed(1, 2, 3, "finetune")}
    assert base not in others and len(others) == 4
    a = torch.randperm(50, generator=torch_generator(1, 2, 3, "x"))
    b = torch.randperm(50, generator=torch_generator(1, 2, 3, "x"))
    assert torch.equal(a, b)


import torch  # noqa: E402  (used above; kept at the end to keep the test list readable)
