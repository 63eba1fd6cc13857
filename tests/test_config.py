import copy

import pytest
import yaml

from dfml.config import ParamError, load_params, validate
from conftest import ROOT  # noqa: E402


@pytest.fixture
def params():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_default_params_are_valid(params):
    assert validate(copy.deepcopy(params))["apis"]["count"] >= 1


def test_bad_value_names_key_and_expectation(params):
    params["distill"]["inner_lr"] = -0.1
    with pytest.raises(ParamError, match=r"distill\.inner_lr: must be a number > 0, got -0\.1"):
        validate(params)


def test_unknown_key_suggests_spelling(params):
    params["invert"]["qq"] = 5
    with pytest.raises(ParamError, match=r"invert\.qq: unknown key \(did you mean 'invert\.q'\?\)"):
        validate(params)


def test_missing_key_is_reported(params):
    del params["evaluate"]["episodes"]
    with pytest.raises(ParamError, match=r"evaluate\.episodes: missing"):
        validate(params)


def test_wrong_type_and_choice(params):
    params["apis"]["count"] = "20"
    params["data"]["dataset"] = "imagenet"
    with pytest.raises(ParamError) as err:
        validate(params)
    assert "apis.count: must be an integer >= 1, got '20'" in str(err.value)
    assert "data.dataset: must be one of" in str(err.value)


def test_cross_check_support_plus_query_fits_the_bank(params):
    params["invert"]["images_per_class"] = 4
    params["distill"]["support_shots"], params["distill"]["query_shots"] = 3, 3
    with pytest.raises(ParamError, match="invert.images_per_class"):
        validate(params)


def test_support_shots_list_checked_by_its_largest_entry(params):
    params["invert"]["images_per_class"] = 8
    params["distill"]["support_shots"], params["distill"]["query_shots"] = [1, 3], 5
    validate(params)  # 3 + 5 fits 8
    params["distill"]["support_shots"] = [1, 4]
    with pytest.raises(ParamError, match=r"support_shots \(the largest\) \+ distill.query_shots \(9\)"):
        validate(params)
    params["distill"]["support_shots"] = [1, "5"]
    with pytest.raises(ParamError, match="distill.support_shots: must be an integer >= 1, or a non-empty list"):
        validate(params)


def test_load_params_rejects_broken_yaml(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(ParamError, match="not valid YAML"):
        load_params(bad)


def test_torch_save_atomic_is_byte_stable(tmp_path):
    import torch

    from dfml.utils import torch_save_atomic

    obj = {"w": torch.arange(6.0).view(2, 3), "name": "api_000"}
    torch_save_atomic(obj, tmp_path / "a.pt")
    torch_save_atomic(obj, tmp_path / "b.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    assert torch.equal(torch.load(tmp_path / "a.pt")["w"], obj["w"])
    assert not list(tmp_path.glob(".*.tmp"))
