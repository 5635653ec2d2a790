"""Hub and node settings: precedence, environment overrides, errors naming keys, file modes."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from healthspace.cli.main import run
from healthspace.client.http import HubNotTrusted, use_ca_bundle
from healthspace.client.sdk import HubClient
from healthspace.core.errors import Conflict, InvalidInput
from healthspace.deploy.config import load_hub_config, load_node_config
from healthspace.deploy.hub_init import HubInitOptions, init_hub_dir
from healthspace.deploy.node_init import NodeInitOptions, init_node_dir
from healthspace.deploy.services import node_connection


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def pem(tmp_path: Path) -> tuple[Path, Path]:
    from healthspace.deploy.tls import self_signed

    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    self_signed(cert, key, ["127.0.0.1"])
    return cert, key


# --- precedence ------------------------------------------------------------------------


def test_flag_beats_env_beats_file_beats_default(tmp_path):
    config = write(tmp_path / "hub.toml", 'db = "sqlite:///file.db"\nport = 9000\nhost = "::1"\n')
    env = {"HEALTHSPACE_HUB_PORT": "9100", "HEALTHSPACE_HUB_CURRENCY": "EUR"}
    loaded = load_hub_config(config, {"port": 9200}, env)
    assert loaded.port == 9200  # flag
    assert loaded.currency == "EUR"  # env over the default
    assert loaded.host == "::1"  # file over the default
    assert loaded.max_body_mb == 64  # default
    assert load_hub_config(config, {}, env).port == 9100  # env over the file
    assert load_hub_config(config, {"port": None}, {}).port == 9000  # unset flags do not count


def test_nested_env_keys_and_lists(tmp_path, pem):
    cert, key = pem
    env = {"HEALTHSPACE_HUB_DB": "sqlite:///x.db", "HEALTHSPACE_HUB_TLS__CERTFILE": str(cert),
           "HEALTHSPACE_HUB_TLS__KEYFILE": str(key),
           "HEALTHSPACE_HUB_WEBHOOKS": "https://a.example/h, https://b.example/h"}
    loaded = load_hub_config(None, {}, env)
    assert loaded.tls.certfile == cert and loaded.tls.enabled
    assert loaded.webhooks == ["https://a.example/h", "https://b.example/h"]
    env["HEALTHSPACE_HUB_WEBHOOKS"] = '["https://c.example/h"]'
    assert load_hub_config(None, {}, env).webhooks == ["https://c.example/h"]
    assert load_hub_config(None, {}, env).url.startswith("https://")


def test_relative_paths_in_a_file_are_relative_to_the_file(tmp_path, pem, monkeypatch):
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "hub.crt").write_bytes(pem[0].read_bytes())
    (folder / "hub.key").write_bytes(pem[1].read_bytes())
    config = write(folder / "hub.toml",
                   'db = "sqlite:///h.db"\n[tls]\ncertfile = "hub.crt"\nkeyfile = "hub.key"\n')
    monkeypatch.chdir(tmp_path)  # not the file's folder
    assert load_hub_config(config, {}, {}).tls.certfile == folder / "hub.crt"


def test_node_settings_layer_the_same_way(tmp_path):
    config = write(tmp_path / "node.toml",
                   'hub_url = "https://hub:8443"\nmin_cell_size = 11\n[store]\npath = "n.duckdb"\n')
    loaded = load_node_config(config, {"min_cell_size": 12},
                              {"HEALTHSPACE_NODE_STORE__PATH": "/data/other.duckdb",
                               "HEALTHSPACE_NODE_POLL_WAIT": "5"})
    assert loaded.min_cell_size == 12
    assert loaded.store.path == Path("/data/other.duckdb")
    assert loaded.poll_wait == 5.0
    assert loaded.state_path() == Path("/data/other.state.sqlite")
    assert load_node_config(config, {}, {}).store.path == tmp_path / "n.duckdb"


def test_a_postgresql_node_builds_its_store_spec(tmp_path):
    env = {"HEALTHSPACE_NODE_STORE__ENGINE": "postgresql",
           "HEALTHSPACE_NODE_STORE__URL": "postgresql://reader@db/omop",
           "HEALTHSPACE_NODE_STORE__SCHEMA": "cdm",
           "HEALTHSPACE_NODE_STATE": str(tmp_path / "n.state.sqlite")}
    spec = load_node_config(None, {"hub_url": "https://h"}, env).store.spec()
    assert (spec.engine, spec.url, spec.schema) == ("postgresql", "postgresql://reader@db/omop",
                                                    "cdm")
    del env["HEALTHSPACE_NODE_STATE"]
    with pytest.raises(InvalidInput) as info:
        load_node_config(None, {}, env)
    assert info.value.field == "state"
    env["HEALTHSPACE_NODE_STORE__SCHEMA"] = "cdm; drop table person"
    with pytest.raises(InvalidInput, match="schema"):
        load_node_config(None, {}, {**env, "HEALTHSPACE_NODE_STATE": "s"})


# --- errors name the key and its source ---------------------------------------------


def test_unknown_keys_name_the_key_and_the_file(tmp_path):
    config = write(tmp_path / "hub.toml", 'db = "sqlite:///x"\nprot = 8000\n')
    with pytest.raises(InvalidInput) as info:
        load_hub_config(config, {}, {})
    assert info.value.field == "prot" and str(config) in str(info.value)
    config = write(tmp_path / "hub.toml", 'db = "sqlite:///x"\n[tls]\ncert = "a"\n')
    with pytest.raises(InvalidInput) as info:
        load_hub_config(config, {}, {})
    assert info.value.field == "tls.cert"


def test_unknown_variables_are_refused_but_other_tools_are_not(tmp_path):
    with pytest.raises(InvalidInput) as info:
        load_hub_config(None, {"db": "sqlite:///x"}, {"HEALTHSPACE_HUB_TLS__CERTFLE": "x"})
    assert info.value.field == "HEALTHSPACE_HUB_TLS__CERTFLE"
    assert "HEALTHSPACE_HUB_TLS__CERTFILE" in str(info.value)  # what was meant
    env = {"HEALTHSPACE_HUB_TEST_DB": "postgresql", "HEALTHSPACE_HUB": "http://client-url"}
    assert load_hub_config(None, {"db": "sqlite:///x"}, env).db == "sqlite:///x"


@pytest.mark.parametrize(("source", "value", "key", "named"), [
    ("file", "port = 0", "port", "hub.toml"),
    ("env", "70000", "port", "HEALTHSPACE_HUB_PORT"),
    ("flag", 0, "port", "--port"),
    ("file", 'currency = "yuan"', "currency", "hub.toml"),
    ("file", "platform_fee = 80", "platform_fee", "hub.toml"),
    ("file", 'log_format = "xml"', "log_format", "hub.toml"),
    ("file", 'log_level = "loud"', "log_level", "hub.toml"),
    ("file", 'webhooks = ["ftp://x"]', "webhooks", "hub.toml"),
])
def test_bad_values_name_the_key_and_where_it_came_from(tmp_path, source, value, key, named):
    text = 'db = "sqlite:///x"\n' + (value + "\n" if source == "file" else "")
    config = write(tmp_path / "hub.toml", text)
    env = {"HEALTHSPACE_HUB_PORT": value} if source == "env" else {}
    flags = {"port": value} if source == "flag" else {}
    with pytest.raises(InvalidInput) as info:
        load_hub_config(config, flags, env)
    assert info.value.field == key
    assert named in str(info.value)


def test_missing_required_keys_say_how_to_set_them(tmp_path):
    with pytest.raises(InvalidInput) as info:
        load_hub_config(None, {}, {})
    assert info.value.field == "db"
    assert "HEALTHSPACE_HUB_DB" in str(info.value) and "--db" in str(info.value)
    with pytest.raises(InvalidInput) as info:
        load_node_config(None, {}, {})
    assert info.value.field == "store.path" and "--store" in str(info.value)


def test_tls_needs_both_files_that_exist(tmp_path, pem):
    cert, _ = pem
    with pytest.raises(InvalidInput, match="both"):
        load_hub_config(None, {"db": "sqlite:///x", "tls.certfile": str(cert)}, {})
    with pytest.raises(InvalidInput) as info:
        load_hub_config(None, {"db": "sqlite:///x", "tls.certfile": str(cert),
                               "tls.keyfile": str(tmp_path / "none.key")}, {})
    assert info.value.field == "tls.keyfile" and "does not exist" in str(info.value)


def test_a_broken_file_is_named(tmp_path):
    config = write(tmp_path / "hub.toml", "db = \n")
    with pytest.raises(InvalidInput) as info:
        load_hub_config(config, {}, {})
    assert info.value.field == "config" and str(config) in str(info.value)
    with pytest.raises(InvalidInput, match="does not exist"):
        load_hub_config(tmp_path / "absent.toml", {}, {})


def test_cli_errors_exit_2(tmp_path, capsys):
    config = write(tmp_path / "hub.toml", 'db = "sqlite:///x"\nport = "high"\n')
    assert run(["hub", "serve", "--config", str(config)]) == 2
    assert "port" in capsys.readouterr().err
    assert run(["node", "serve", "--config", str(tmp_path / "missing.toml")]) == 2
    assert run(["hub", "init"]) == 2


# --- init writes private files ------------------------------------------------------


def test_hub_init_dir_writes_private_files_and_a_loadable_config(tmp_path):
    folder = tmp_path / "hub"
    files = init_hub_dir(folder, HubInitOptions(port=8443, tls_self_signed=True,
                                                san=("hub.example.org",)))
    for path in (files.config, files.token_file, files.keyfile, folder / "hub.sqlite"):
        assert path is not None and mode(path) == 0o600, path
    assert files.certfile is not None and mode(files.certfile) == 0o644
    assert files.names == ("127.0.0.1", "localhost", "hub.example.org")
    loaded = load_hub_config(files.config, {}, {})
    assert loaded.port == 8443 and loaded.tls.certfile == files.certfile
    assert loaded.db == f"sqlite:///{folder / 'hub.sqlite'}"
    token = files.token_file.read_text().strip()
    assert token.startswith("hs_")
    with pytest.raises(Conflict):
        init_hub_dir(folder, HubInitOptions())


def test_the_self_signed_certificate_covers_its_names(tmp_path):
    from cryptography import x509

    files = init_hub_dir(tmp_path / "hub", HubInitOptions(
        host="10.1.2.3", tls_self_signed=True, san=("hub.example.org",)))
    assert files.certfile is not None
    cert = x509.load_pem_x509_certificate(files.certfile.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1",
                                                                            "10.1.2.3"}
    assert set(names.get_values_for_type(x509.DNSName)) == {"localhost", "hub.example.org"}


def test_hub_init_options_are_checked(tmp_path, pem):
    with pytest.raises(InvalidInput) as info:
        init_hub_dir(tmp_path / "a", HubInitOptions(tls_self_signed=True, certfile=pem[0],
                                                    keyfile=pem[1]))
    assert info.value.field == "tls_self_signed"
    with pytest.raises(InvalidInput) as info:
        init_hub_dir(tmp_path / "b", HubInitOptions(certfile=pem[0]))
    assert info.value.field == "keyfile"
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_node_init_dir_writes_private_state_and_config(tmp_path):
    store = tmp_path / "var" / "h1.duckdb"
    files = init_node_dir(tmp_path / "etc", NodeInitOptions(
        hub_url="https://hub.example.org:8443", store=store, ca_bundle=tmp_path / "hub.crt"))
    assert files.state == tmp_path / "var" / "h1.state.sqlite"
    assert mode(files.state) == 0o600 and mode(files.config) == 0o600
    assert files.public_key_file.read_text().strip() == files.public_key
    (tmp_path / "hub.crt").write_text("-")  # the CA bundle arrives after init
    loaded = load_node_config(files.config, {}, {})
    assert loaded.hub_url == "https://hub.example.org:8443"
    assert loaded.store.path == store and loaded.state_path() == files.state
    assert loaded.token_file == tmp_path / "etc" / "node.token"
    assert loaded.token is None  # the token is never written into node.toml
    with pytest.raises(Conflict):
        init_node_dir(tmp_path / "etc", NodeInitOptions(hub_url="https://h", store=store))


def test_node_init_without_dir_keeps_the_state_private(tmp_path):
    store = tmp_path / "h2.duckdb"
    assert run(["node", "init", "--store", str(store)]) == 0
    assert mode(tmp_path / "h2.state.sqlite") == 0o600


# --- the node's token and trust ---------------------------------------------------------


def test_the_token_file_must_be_private(tmp_path):
    token = write(tmp_path / "node.token", "hs_abc\n")
    token.chmod(0o644)
    config = load_node_config(None, {"hub_url": "https://h", "store.path": "s.duckdb"},
                              {"HEALTHSPACE_NODE_TOKEN_FILE": str(token)})
    with pytest.raises(InvalidInput) as info:
        node_connection(config)
    assert info.value.field == "token_file" and "chmod 600" in str(info.value)
    token.chmod(0o600)
    assert node_connection(config).token == "hs_abc"
    with pytest.raises(InvalidInput) as info:
        load_node_config(None, {"hub_url": "https://h", "store.path": "s", "token": "t"},
                         {"HEALTHSPACE_NODE_TOKEN_FILE": str(token)})
    assert info.value.field == "token"


def test_a_missing_or_broken_ca_bundle_names_the_setting(tmp_path):
    try:
        use_ca_bundle(tmp_path / "none.pem", label="ca_bundle in node.toml")
        with pytest.raises(InvalidInput) as info:
            HubClient("https://127.0.0.1:1", "t")
        assert info.value.field == "ca_bundle" and "node.toml" in str(info.value)
        use_ca_bundle(write(tmp_path / "junk.pem", "not a certificate"))
        with pytest.raises(InvalidInput, match="no PEM certificate"):
            HubClient("https://127.0.0.1:1", "t")
    finally:
        use_ca_bundle(None)
    assert int(HubNotTrusted("x").exit_code) == 2  # a configuration error, not an outage
