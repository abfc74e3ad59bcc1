"""Fixtures that guarantee every process a supervisor test starts is stopped again."""

import pytest

from tests.supervisor.helpers import kill_all, processes_using, run_cli


@pytest.fixture
def cluster_dir(tmp_path):
    """A data dir for one test; afterwards `distlog cluster down`, then SIGKILL any leftover."""
    data_dir = tmp_path / "data"
    try:
        yield data_dir
    finally:
        if (data_dir / "cluster.json").exists():
            run_cli("down", "--data-dir", data_dir)
        leftovers = processes_using(data_dir)
        kill_all(leftovers)
        assert not leftovers, f"processes left running: {[p.pid for p in leftovers]}"
