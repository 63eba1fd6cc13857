"""params.yaml as typed models: every bad value named with what the key accepts, before any stage works.

Defects 1-9 of the redesign issue each have a test here (marked in the test's docstring).
"""

import copy
import math
import re

import pytest
import yaml

from conftest import ROOT
from dfml.core.errors import ParamError
from dfml.params import Params, load_params, parameter_table, validate


@pytest.fixture
def params():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def _error(params) -> str:
    with pytest.raises(ParamError) as err:
        validate(params)
    return str(err.value)


def test_default_params_are_valid_and_typed(params):
    p = validate(copy.deepcopy(params))
    assert isinstance(p, Params) and p.apis.count >= 1 and p.invert.bidf.q == 2 and p.distill.support_shots == [1, 5]
    with pytest.raises(Exception):  # sections are frozen
        p.invert.bidf.q = 3


def test_bad_value_names_key_and_expectation(params):
    params["distill"]["inner_lr"] = -0.1
    assert re.search(r"distill\.inner_lr: must be a finite number > 0, got -0\.1", _error(params))


def test_unknown_key_suggests_spelling(params):
    params["invert"]["bidf"]["qq"] = 5
    assert re.search(r"invert\.bidf\.qq: unknown key \(did you mean 'invert\.bidf\.q'\?\)", _error(params))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["runtim"] = {}
    assert "runtim: unknown key (did you mean 'runtime'?)" in _error(params)


def test_missing_key_is_reported(params):
    del params["evaluate"]["episodes"]
    assert "evaluate.episodes: missing; add it to params.yaml" in _error(params)


def test_wrong_type_and_choice(params):
    params["apis"]["count"] = "20"
    params["data"]["dataset"] = "imagenet"
    params["distill"]["first_order"] = 1
    text = _error(params)
    assert "apis.count: must be an integer >= 1, got '20'" in text
    assert "data.dataset: must be one of 'omniglot', 'cifar-fs', 'cub', 'miniimagenet', 'folder', got 'imagenet'" \
        in text
    assert "distill.first_order: must be true or false, got 1" in text
    assert text.startswith("params.yaml has 3 bad value(s)")


def test_cross_check_support_plus_query_fits_the_bank(params):
    params["invert"]["images_per_class"] = 4
    params["distill"]["support_shots"], params["distill"]["query_shots"] = 3, 3
    assert "invert.images_per_class (4) must be at least" in _error(params)


def test_support_shots_list_checked_by_its_largest_entry(params):
    params["invert"]["images_per_class"] = 8
    params["distill"]["support_shots"], params["distill"]["query_shots"] = [1, 3], 5
    validate(params)  # 3 + 5 fits 8
    params["distill"]["support_shots"] = [1, 4]
    assert re.search(r"support_shots \(the largest\) \+ distill.query_shots \(9\)", _error(params))
    params["distill"]["support_shots"] = [1, "5"]
    assert "distill.support_shots: must be an integer >= 1 or a non-empty list, each an integer >= 1, got [1, '5']" \
        in _error(params)


@pytest.mark.parametrize("size", [30, 12, 8, 516])
def test_image_size_must_suit_conv4_and_the_generator(params, size):
    """Defect 1: an image size not a multiple of 4, or below 16, used to pass and crash invert or pretrain."""
    params["data"]["image_size"] = size
    assert f"data.image_size: must be null, or an integer >= 16 and <= 512 and a multiple of 4, got {size}" \
        in _error(params)
    params["data"]["image_size"] = 32
    validate(params)


@pytest.mark.parametrize("device", ["cudaX", "gpu", "cuda:", "cuda:x", ""])
def test_device_spelling_is_checked_before_any_stage(params, device):
    """Defect 2: `device: cudaX` passed validation and crashed in torch.device."""
    params["device"] = device
    assert "device: must be" in _error(params)


def test_cuda_without_a_gpu_is_a_param_error_not_a_traceback(monkeypatch):
    """Defect 2: `device: cuda` without a GPU gave a traceback; now ParamError naming the key."""
    import torch

    from dfml.core.runtime import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ParamError, match=r"device is 'cuda' but CUDA is not available on this machine"):
        resolve_device("cuda")
    with pytest.raises(ParamError, match=r"--device is 'cuda:1'"):
        resolve_device("cuda:1", key="--device")
    assert resolve_device("auto").type == "cpu"


@pytest.mark.parametrize("section,key,value", [("invert.bidf", "mu", math.nan), ("distill", "temperature", math.inf),
                                               ("distill", "outer_lr", math.nan),
                                               ("runtime", "http", None), ("apis", "lr", -math.inf)])
def test_nan_and_inf_are_refused(params, section, key, value):
    """Defect 3: NaN and inf passed every "> 0" check and blamed the API or crashed later."""
    if key == "http":
        params["runtime"]["http"]["timeout"] = math.nan
        dotted = "runtime.http.timeout"
    else:
        node = params
        for part in section.split("."):
            node = node[part]
        node[key] = value
        dotted = f"{section}.{key}"
    assert re.search(rf"{re.escape(dotted)}: must be a finite number", _error(params))


@pytest.mark.parametrize("seed", [2**63, 2**64 + 5, -1])
def test_seed_out_of_range(params, seed):
    """Defect 4: a seed above 2^63 passed, then pretrain overflowed."""
    params["seed"] = seed
    assert re.search(r"seed: must be an integer >= 0 and < 9223372036854775808", _error(params))


def test_repeated_shots_are_refused(params):
    """Defect 5: `evaluate.shots: [1, 1]` ran every evaluation, then the report crashed in pandas."""
    params["evaluate"]["shots"] = [1, 1]
    assert "evaluate.shots: lists [1, 1] with a repeat; list each once" in _error(params)


def test_real_image_cap_too_small_is_caught_before_prepare(params):
    """Defect 6: `data.subset.images_per_class: 3` was caught only in distill, after three stages ran."""
    params["data"]["subset"]["images_per_class"] = 3
    text = _error(params)
    assert "data.subset.images_per_class (3) must be at least 20" in text  # 5 shots + 15 queries of evaluate
    params["data"]["subset"]["images_per_class"] = 20
    validate(params)


@pytest.mark.parametrize("url", ["http://", "ftp://host", "http//host", "http://host:port", "localhost:8000"])
def test_http_url_needs_a_scheme_and_a_host(params, url):
    """Defect 7: `http://` passed validation, then requests raised InvalidURL."""
    params["runtime"]["http"]["url"] = url
    assert "runtime.http.url: " in _error(params)


def test_unknown_model_name_gets_the_schema_message(params):
    """Defect 8: an unknown name in evaluate.models failed in DVC ("No such file"), not with the schema's message."""
    params["run"]["evaluate"] = ["random", "bidf-mkd"]
    assert "run.evaluate: must be a non-empty list, each one of 'random', 'maml_real', 'bidf_mkd'" in _error(params)


def test_topk_at_or_above_ways_is_refused(params):
    """Defect 9: `query.topk` >= ways was the full distribution in practice while the metrics said topk."""
    params["query"]["answer"], params["query"]["topk"] = "topk", 5
    assert "query.topk (5) must be below ways (5)" in _error(params)
    params["query"]["topk"] = 4
    validate(params)
    params["query"]["answer"], params["query"]["topk"] = "probs", 5  # topk is read in topk mode only
    validate(params)


def test_mh_needs_datasets_and_ss_refuses_them(params):
    params["apis"]["scenario"] = "mh"
    assert "data.datasets: the mh scenario needs two or more datasets" in _error(params)
    params["data"]["datasets"] = ["omniglot", "miniimagenet"]
    validate(params)
    params["apis"]["scenario"] = "ss"
    assert "data.datasets is ['omniglot', 'miniimagenet'] but apis.scenario is 'ss'" in _error(params)


def test_load_params_rejects_broken_yaml(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(ParamError, match="not valid YAML"):
        load_params(bad)
    with pytest.raises(ParamError, match="not found"):
        load_params(tmp_path / "absent.yaml")


def test_parameter_table_lists_every_key_with_its_default(params):
    table = parameter_table(ROOT / "params.yaml")
    for key, value in (("invert.bidf.q", "2"), ("data.subset.images_per_class", "null"), ("runtime.http.url", None)):
        assert f"| `{key}` |" in table
        if value is not None:
            assert f"| `{key}` | `{value}` |" in table
    leaves = []

    def walk(node, prefix):
        for k, v in node.items():
            walk(v, f"{prefix}{k}.") if isinstance(v, dict) else leaves.append(f"{prefix}{k}")

    walk(params, "")
    assert all(f"| `{leaf}` |" in table for leaf in leaves)


def test_parameter_tables_are_generated_from_the_models(monkeypatch):
    """README (sections) and docs/parameters.md (every key) hold the generator's output: python -m dfml.params --write."""
    from dfml.params import MARKERS, TABLES

    monkeypatch.chdir(ROOT)
    for doc, table in TABLES.items():
        text = doc.read_text()
        assert MARKERS[0] in text and MARKERS[1] in text, doc
        assert text.split(MARKERS[0])[1].split(MARKERS[1])[0].strip() == table(ROOT / "params.yaml").strip(), doc


def test_torch_save_atomic_is_byte_stable(tmp_path):
    import torch

    from dfml.core.io import torch_save_atomic

    obj = {"w": torch.arange(6.0).view(2, 3), "name": "api_000"}
    torch_save_atomic(obj, tmp_path / "a.pt")
    torch_save_atomic(obj, tmp_path / "b.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    assert torch.equal(torch.load(tmp_path / "a.pt")["w"], obj["w"])
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_params_file_of_the_old_shape_is_told_where_each_key_moved(params):
    params["invert"]["q"] = 2
    params["apis"]["answer"] = "probs"
    params["evaluate"]["models"] = ["random"]
    text = _error(params)
    assert "invert.q: moved to invert.bidf.q" in text and "apis.answer: moved to query.answer" in text
    assert "evaluate.models: moved to run.evaluate" in text
