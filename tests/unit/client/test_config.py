"""Hub URL and token resolution: flags, then environment, then the config file."""

import pytest

from healthspace.client.config import resolve
from healthspace.core.errors import InvalidInput


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    monkeypatch.delenv("HEALTHSPACE_HUB", raising=False)
    monkeypatch.delenv("HEALTHSPACE_TOKEN", raising=False)
    monkeypatch.setenv("HEALTHSPACE_CONFIG", str(tmp_path / "config.toml"))


def test_flags_win_over_env_and_file(monkeypatch, tmp_path):
    (tmp_path / "config.toml").write_text('hub = "http://file"\ntoken = "file-token"\n')
    monkeypatch.setenv("HEALTHSPACE_HUB", "http://env")
    assert resolve("http://flag", "t").hub == "http://flag"
    assert resolve(None, None).hub == "http://env"
    assert resolve(None, None).token == "file-token"


def test_missing_values_name_the_flag():
    with pytest.raises(InvalidInput) as info:
        resolve(None, "t")
    assert info.value.field == "hub" and "--hub" in str(info.value)
    with pytest.raises(InvalidInput) as info:
        resolve("http://x", None)
    assert info.value.field == "token"


def test_broken_config_file_is_reported(tmp_path):
    (tmp_path / "config.toml").write_text("hub = \n")
    with pytest.raises(InvalidInput, match="config"):
        resolve(None, None)
