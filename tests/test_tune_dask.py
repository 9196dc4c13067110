"""The Dask path: a LocalCluster through distributed.Client(...).get_executor() and the CLI."""

from __future__ import annotations

import pytest

distributed = pytest.importorskip("distributed")

from bnfast.tune import Study, dask_executor  # noqa: E402
from bnfast.tune.cli import main  # noqa: E402
from bnfast.tune.synthetic import QUADRATIC_SPACE, flaky, quadratic  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as c:
        yield c


def test_dask_executor_same_trials_as_serial(cluster):
    serial = Study(QUADRATIC_SPACE, seed=4).optimize(flaky, 6, workers=1)
    ex, client = dask_executor(cluster.scheduler_address)
    try:
        dask = Study(QUADRATIC_SPACE, seed=4).optimize(flaky, 6, executor=ex)
    finally:
        client.close()
    key = [(t.params, t.seed, t.status, t.value) for t in serial.trials()]
    assert [(t.params, t.seed, t.status, t.value) for t in dask.trials()] == key
    assert len({t.worker for t in dask.trials()}) >= 1


def test_cli_scheduler_address(cluster, tmp_path, capsys):
    db = str(tmp_path / "d.db")
    argv = ["--objective", "bnfast.tune.synthetic:quadratic", "--space",
            "bnfast.tune.synthetic:QUADRATIC_SPACE", "--trials", "4", "--storage", db,
            "--scheduler", cluster.scheduler_address, "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert "4 trials 4 complete" in capsys.readouterr().out
    fresh = Study(QUADRATIC_SPACE, seed=0).optimize(quadratic, 4, workers=1)
    stored = Study.load(db)
    assert [t.params for t in stored.trials()] == [t.params for t in fresh.trials()]
