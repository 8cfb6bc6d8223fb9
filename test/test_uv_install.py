"""tools/uv_install.py: `make setup` hands uv the package sources pip is configured with."""

import pytest


@pytest.fixture
def uv_install(load_script):
    return load_script("tools/uv_install")


LISTING = """global.cert='/etc/ssl/certs/ca-certificates.crt'
global.constraint='/etc/pip/constraints.txt'
global.extra-index-url='file:///opt/a/simple file:///opt/b/simple'
global.find-links='/opt/wheels'
install.timeout='60'
:env:.find-links='/srv/wheels /srv/more'
:env:.default-timeout='180'
"""


def test_pip_sources_become_uv_options_with_a_variable_over_the_files(uv_install):
    settings = uv_install.pip_settings(LISTING)
    assert settings == {"constraint": ["/etc/pip/constraints.txt"],
                        "extra-index-url": ["file:///opt/a/simple", "file:///opt/b/simple"],
                        "find-links": ["/srv/wheels", "/srv/more"]}
    assert uv_install.uv_source_options(settings) == [
        "--extra-index-url", "file:///opt/a/simple", "--extra-index-url", "file:///opt/b/simple",
        "--find-links", "/srv/wheels", "--find-links", "/srv/more", "--constraint", "/etc/pip/constraints.txt"]


def test_a_hash_checked_install_takes_no_constraints_and_no_index_carries_over(uv_install):
    settings = uv_install.pip_settings("global.index-url='https://mirror.example/simple'\n"
                                       "global.constraint='/c.txt'\n:env:.no-index='1'\n")
    assert uv_install.uv_source_options(settings, hashed=True) == [
        "--no-index", "--index-url", "https://mirror.example/simple"]
    assert "--constraint" in uv_install.uv_source_options(settings)


def test_no_pip_configuration_gives_uv_its_defaults(uv_install):
    assert uv_install.uv_source_options(uv_install.pip_settings("")) == []
