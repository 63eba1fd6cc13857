"""Stage `check_params`: check params.yaml before DVC meets a stage it cannot build.

DVC checks a stage's dependencies before it runs the stage's command, so an unknown name in ``run.evaluate`` or
``run.baselines`` would stop ``dvc repro`` with DVC's "No such file or directory: models/<name>.pt" rather than
the schema's message. Every optional stage (evaluate_model@, baseline@, whitebox_*@) depends on this stage's
output, and this stage lists the ``run`` section, so it runs first whenever those lists change, and a bad name
stops the run here with the message of :mod:`dfml.params` (exit 2). Its output never changes (it only orders the
stages), so passing the check reruns nothing downstream.
"""

from __future__ import annotations

from ..core.io import write_json
from ..params import Params
from . import paths
from .stage import main


def check_params(params: Params) -> None:
    write_json(paths.PARAMS_CHECKED, {"params.yaml": "checked"})


if __name__ == "__main__":
    main("check_params", check_params, __doc__.splitlines()[0])
