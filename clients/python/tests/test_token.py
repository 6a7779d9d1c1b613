"""A daemon with GPUVISOR_TOKEN: the client sends it from its own environment."""
import pytest

import conftest
import gpuvisor


@pytest.fixture(scope="module")
def secured():
    d = conftest.start_daemon("clients-python-token-", conftest.default_config, token="s3cret")
    try:
        yield d
    finally:
        conftest.stop_daemon(d)


def test_token_from_the_environment(secured, monkeypatch):
    monkeypatch.setenv("GPUVISOR_URL", secured.url)
    monkeypatch.delenv("GPUVISOR_TOKEN", raising=False)
    with pytest.raises(gpuvisor.GpuvisorError) as e:
        gpuvisor.ResourceManager().get_all_workers()
    assert e.value.status == 401 and e.value.code == "unauthorized"
    monkeypatch.setenv("GPUVISOR_TOKEN", "s3cret")
    assert gpuvisor.ResourceManager().get_all_workers() == []
    assert gpuvisor.EventBroadcaster().publish("app.x", {})["type"] == "app.x"
