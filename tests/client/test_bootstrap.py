"""local_bootstrap() finds this machine's cluster as the distlog commands do (the README's example
relies on it: `cluster up` picks free ports when 9092-9094 are taken)."""

import pytest

from distlog.client import ClusterNotFoundError, local_bootstrap
from distlog.supervisor import cluster_file


def write_cluster(data_dir, addresses):
    data_dir.mkdir(parents=True, exist_ok=True)
    record = cluster_file.new_record(data_dir, dict(enumerate(addresses, 1)))
    cluster_file.save(data_dir, record)


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.delenv("DISTLOG_BOOTSTRAP", raising=False)
    monkeypatch.delenv("DISTLOG_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_the_default_data_dir_in_the_current_directory_is_where_scripts_up_puts_the_cluster(clean_env, tmp_path):
    write_cluster(tmp_path / ".distlog", ["tcp://127.0.0.1:40001", "tcp://127.0.0.1:40002"])
    assert local_bootstrap() == "tcp://127.0.0.1:40001,tcp://127.0.0.1:40002"


def test_the_environment_names_the_data_dir_or_the_bootstrap_itself(clean_env, tmp_path):
    write_cluster(tmp_path / "elsewhere", ["tcp://127.0.0.1:40003"])
    clean_env.setenv("DISTLOG_DATA_DIR", str(tmp_path / "elsewhere"))
    assert local_bootstrap() == "tcp://127.0.0.1:40003"
    clean_env.setenv("DISTLOG_BOOTSTRAP", "127.0.0.1:9092")  # as the commands' --bootstrap, it wins
    assert local_bootstrap() == "127.0.0.1:9092"
    # A data dir given in the call names one cluster: the environment's bootstrap is not it.
    assert local_bootstrap(tmp_path / "elsewhere") == "tcp://127.0.0.1:40003"


def test_no_cluster_says_where_it_looked_and_how_to_name_one(clean_env, tmp_path):
    with pytest.raises(ClusterNotFoundError) as missing:
        local_bootstrap()
    assert "no cluster in .distlog" in str(missing.value) and "DISTLOG_BOOTSTRAP=HOST:PORT" in str(missing.value)
    write_cluster(tmp_path / "empty", [])
    with pytest.raises(ClusterNotFoundError, match="lists no brokers"):
        local_bootstrap(tmp_path / "empty")
