"""Settings resolution: precedence, python-gitlab INI, gitlab.yml, bad values, secrets."""

from __future__ import annotations

import stat
import textwrap
from pathlib import Path

import pytest
import responses

from regops.cli import main
from regops.config import Settings, collect_settings, resolve_settings
from regops.errors import ConfigError
from regops.secrets import Secret

TOKEN = "glpat-config-test-AAAA1111"
INI_TOKEN = "glpat-from-ini-BBBB2222"

# Shaped like the file the Linux package generates (/var/opt/gitlab/gitlab-rails/etc/gitlab.yml,
# from gitlab.yml.erb): production: &base with gitlab and registry sections.
GITLAB_YML = """\
# This file is managed by gitlab-ctl. Manual changes will be
# erased! To change the contents below, edit /etc/gitlab/gitlab.rb
# and run `sudo gitlab-ctl reconfigure`.

production: &base
  gitlab:
    host: gitlab.example.com
    port: 443
    https: true
    max_request_duration_seconds: 57
    trusted_proxies:
    email_enabled: true
    email_from: gitlab@example.com
    default_projects_features:
      container_registry: true
  registry:
    enabled: true
    host: registry.example.com
    port: 5050
    api_url: http://127.0.0.1:5000
    key: /var/opt/gitlab/gitlab-rails/etc/gitlab-registry.key
    path: /var/opt/gitlab/gitlab-rails/shared/registry
    issuer: omnibus-gitlab-issuer
    notification_secret: "fake-notification-secret"
  gitlab_ci:
    builds_path: /var/opt/gitlab/gitlab-ci/builds
"""


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A fake / (for /etc/python-gitlab.cfg and /var/opt/gitlab/...)."""
    path = tmp_path / "root"
    path.mkdir()
    return path


def resolve(env=None, *, home, root, **explicit) -> Settings:
    return resolve_settings(environ=env or {}, home=home, system_root=root, **explicit)


def collect(env=None, *, home, root, **explicit) -> Settings:
    """Resolved but not checked for completeness (no token needed)."""
    return collect_settings(environ=env or {}, home=home, system_root=root, **explicit)


BASE_ENV = {"GITLAB_URL": "https://gl.example", "GITLAB_PRIVATE_TOKEN": TOKEN}


def write_ini(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def write_gitlab_yml(root: Path, text: str = GITLAB_YML) -> Path:
    path = root / "var/opt/gitlab/gitlab-rails/etc/gitlab.yml"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return path


INI = f"""\
[global]
default = local
ssl_verify = true
timeout = 5

[local]
url = https://gitlab.local.example
private_token = {INI_TOKEN}
regops_registry_url = https://registry.local.example:5050
regops_registry_auth = realm
regops_registry_user = ini-user

[other]
url = https://other.example
oauth_token = oauth-token-value-1234
"""


# -- precedence --------------------------------------------------------------------------


def test_environment_only(home, root):
    s = resolve(
        {"GITLAB_URL": "https://gl.example.com", "GITLAB_PRIVATE_TOKEN": TOKEN},
        home=home,
        root=root,
    )
    assert s.gitlab_url == "https://gl.example.com"
    assert s.token == Secret(TOKEN) and s.token_kind == "private"
    assert s.sources["gitlab_url"] == "env GITLAB_URL"
    assert s.sources["token"] == "env GITLAB_PRIVATE_TOKEN"
    assert s.registry_url is None and s.registry_auth is None
    assert s.registry_issuer == "gitlab-issuer" and "registry_issuer" not in s.sources


def test_arguments_beat_environment_beat_ini(home, root):
    write_ini(home / ".python-gitlab.cfg", INI)
    env = {"GITLAB_URL": "https://env.example", "REGOPS_REGISTRY_USER": "env-user"}
    s = resolve(env, home=home, root=root, url="https://arg.example")
    assert s.gitlab_url == "https://arg.example" and s.sources["gitlab_url"] == "argument"
    assert s.registry_username == "env-user"
    assert s.sources["registry_username"] == "env REGOPS_REGISTRY_USER"
    # Token from the INI file, since neither arguments nor environment had one.
    assert s.token == Secret(INI_TOKEN)
    assert s.sources["token"] == "~/.python-gitlab.cfg [local]"
    assert s.registry_url == "https://registry.local.example:5050"
    assert s.timeout == 5.0 and s.sources["timeout"] == "~/.python-gitlab.cfg [global]"


def test_env_token_kinds_and_order(home, root):
    base = {"GITLAB_URL": "https://gl.example.com"}
    s = resolve(
        {**base, "GITLAB_OAUTH_TOKEN": "oauth-abcdef", "CI_JOB_TOKEN": "job-abcdef"},
        home=home,
        root=root,
    )
    assert s.token_kind == "oauth" and s.token == Secret("oauth-abcdef")
    s = resolve(
        {**base, "GITLAB_PRIVATE_TOKEN": TOKEN, "GITLAB_OAUTH_TOKEN": "oauth-abcdef"},
        home=home,
        root=root,
    )
    assert s.token_kind == "private"


def test_ci_job_token(home, root):
    env = {
        "CI_SERVER_URL": "https://gitlab.ci.example",
        "CI_JOB_TOKEN": "job-token-xyz123",
        "REGOPS_REGISTRY_URL": "https://registry.ci.example",
    }
    s = resolve(env, home=home, root=root)
    assert s.gitlab_url == "https://gitlab.ci.example"
    assert s.sources["gitlab_url"] == "env CI_SERVER_URL"
    assert s.token_kind == "job" and s.sources["token_kind"] == "env CI_JOB_TOKEN"
    assert s.registry_auth == "realm"
    assert s.registry_username == "gitlab-ci-token"


def test_gitlab_url_beats_ci_server_url(home, root):
    env = {"CI_SERVER_URL": "https://ci.example", "GITLAB_URL": "https://gl.example"}
    assert collect(env, home=home, root=root).gitlab_url == "https://gl.example"


def test_token_kind_travels_with_its_token(home, root):
    # An oauth token in the environment, a private token as argument: kind is the argument's.
    env = {**BASE_ENV, "GITLAB_OAUTH_TOKEN": "oauth-abcdef"}
    s = resolve(env, home=home, root=root, private_token=TOKEN)
    assert s.token == Secret(TOKEN) and s.token_kind == "private"
    s = resolve(env, home=home, root=root, token=TOKEN)
    assert s.token_kind == "private" and s.sources["token"] == "argument"
    s = resolve(env, home=home, root=root, token=TOKEN, token_kind="job")
    assert s.token_kind == "job"


def test_none_arguments_are_ignored(home, root):
    env = dict(BASE_ENV)
    s = resolve(env, home=home, root=root, url=None, registry_url=None)
    assert s.gitlab_url == "https://gl.example"


def test_unknown_argument(home, root):
    with pytest.raises(ConfigError, match="unknown setting 'gitlab'"):
        resolve({}, home=home, root=root, gitlab="x")


# -- python-gitlab INI -------------------------------------------------------------------


def test_ini_global_default_section(home, root):
    write_ini(home / ".python-gitlab.cfg", INI)
    s = resolve({}, home=home, root=root)
    assert s.gitlab_url == "https://gitlab.local.example"
    assert s.config_section == "local"
    assert s.sources["gitlab_url"] == "~/.python-gitlab.cfg [local]"
    assert s.registry_auth == "realm" and s.registry_username == "ini-user"
    assert s.sources["registry_auth"] == "~/.python-gitlab.cfg [local]"


def test_ini_section_from_env_and_argument(home, root):
    write_ini(home / ".python-gitlab.cfg", INI)
    s = resolve({"REGOPS_CONFIG_SECTION": "other"}, home=home, root=root)
    assert s.gitlab_url == "https://other.example"
    assert s.token_kind == "oauth" and s.token == Secret("oauth-token-value-1234")
    s = resolve({"REGOPS_CONFIG_SECTION": "other"}, home=home, root=root, config_section="local")
    assert s.gitlab_url == "https://gitlab.local.example"


def test_ini_missing_section_is_an_error(home, root):
    write_ini(home / ".python-gitlab.cfg", INI)
    with pytest.raises(ConfigError, match=r"no section \[nope\].*local, other"):
        resolve({"REGOPS_CONFIG_SECTION": "nope"}, home=home, root=root)


def test_ini_only_section_needs_no_default(home, root):
    write_ini(home / ".python-gitlab.cfg", "[solo]\nurl = https://solo.example\n")
    assert collect({}, home=home, root=root).gitlab_url == "https://solo.example"


def test_python_gitlab_cfg_env_and_system_file(home, root, tmp_path):
    write_ini(root / "etc/python-gitlab.cfg", "[sys]\nurl = https://system.example\n")
    assert (
        collect({}, home=home, root=root)
        .sources["gitlab_url"]
        .endswith("etc/python-gitlab.cfg [sys]")
    )
    custom = write_ini(tmp_path / "custom.cfg", "[c]\nurl = https://custom.example\n")
    s = collect({"PYTHON_GITLAB_CFG": str(custom)}, home=home, root=root)
    assert s.gitlab_url == "https://custom.example"
    with pytest.raises(ConfigError, match="does not exist"):
        collect({"PYTHON_GITLAB_CFG": str(tmp_path / "missing.cfg")}, home=home, root=root)


def test_ini_section_ssl_verify_overrides_global(home, root, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("not really a CA, only needs to exist")
    write_ini(
        home / ".python-gitlab.cfg",
        f"[global]\ndefault = a\nssl_verify = false\n[a]\nurl = https://a.example\n"
        f"ssl_verify = {ca}\n",
    )
    s = collect({}, home=home, root=root)
    assert s.ssl_verify == str(ca)
    assert s.http_settings().verify == str(ca)


def test_ini_credential_helper(home, root, tmp_path):
    helper = tmp_path / "helper.sh"
    helper.write_text("#!/bin/sh\necho helper-token-123456\n")
    helper.chmod(helper.stat().st_mode | stat.S_IEXEC)
    write_ini(
        home / ".python-gitlab.cfg",
        f"[h]\nurl = https://h.example\nprivate_token = helper: {helper}\n",
    )
    assert resolve({}, home=home, root=root).token == Secret("helper-token-123456")
    failing = tmp_path / "fail.sh"
    failing.write_text("#!/bin/sh\necho nope >&2\nexit 3\n")
    failing.chmod(failing.stat().st_mode | stat.S_IEXEC)
    write_ini(
        home / ".python-gitlab.cfg",
        f"[h]\nurl = https://h.example\nprivate_token = helper: {failing}\n",
    )
    with pytest.raises(ConfigError, match="exited 3"):
        resolve({}, home=home, root=root)


# -- gitlab.yml ----------------------------------------------------------------------------


def test_on_the_gitlab_host_only_a_token_is_needed(home, root):
    path = write_gitlab_yml(root)
    s = resolve({"GITLAB_PRIVATE_TOKEN": TOKEN}, home=home, root=root)
    assert s.gitlab_url == "https://gitlab.example.com"
    assert s.sources["gitlab_url"] == f"{path} production.gitlab.host"
    assert s.registry_url == "http://127.0.0.1:5000"
    assert s.registry_host == "registry.example.com:5050"
    assert s.registry_key_path == "/var/opt/gitlab/gitlab-rails/etc/gitlab-registry.key"
    assert s.sources["registry_key_path"] == f"{path} production.registry.key"
    assert s.registry_issuer == "omnibus-gitlab-issuer"
    assert s.registry_storage_path == "/var/opt/gitlab/gitlab-rails/shared/registry"
    assert s.registry_auth == "key"
    assert s.sources["registry_auth"].startswith("inferred")


def test_gitlab_yml_loses_to_environment(home, root):
    write_gitlab_yml(root)
    env = {
        "GITLAB_PRIVATE_TOKEN": TOKEN,
        "REGOPS_REGISTRY_AUTH": "realm",
        "GITLAB_URL": "https://gitlab.internal:8443",
    }
    s = resolve(env, home=home, root=root)
    assert s.registry_auth == "realm" and s.gitlab_url == "https://gitlab.internal:8443"
    assert s.registry_key_path is not None  # still known, just not used


def test_gitlab_yml_http_port_and_relative_root(home, root, tmp_path):
    text = (
        "production:\n  gitlab:\n    host: gl.example\n    port: 8080\n    https: false\n"
        "    relative_url_root: /gitlab\n  registry:\n    enabled: false\n"
        "    api_url: http://localhost:5000\n"
    )
    path = tmp_path / "gitlab.yml"
    path.write_text(text)
    s = collect({}, home=home, root=root, gitlab_yml_path=path)
    assert s.gitlab_url == "http://gl.example:8080/gitlab"
    assert s.registry_url is None  # registry disabled: nothing taken from it


def test_named_gitlab_yml_must_exist(home, root, tmp_path):
    with pytest.raises(ConfigError, match=r"gitlab_yml_path.*does not exist"):
        resolve({"REGOPS_GITLAB_YML": str(tmp_path / "nope.yml")}, home=home, root=root)


def test_gitlab_yml_without_production(home, root, tmp_path):
    path = tmp_path / "gitlab.yml"
    path.write_text("development:\n  gitlab: {host: x}\n")
    with pytest.raises(ConfigError, match="no 'production' section"):
        resolve({}, home=home, root=root, gitlab_yml_path=str(path))


# -- bad values and incomplete settings ---------------------------------------------------


def test_ssl_verify_nonsense_names_field_and_source(home, root):
    env = {**BASE_ENV, "REGOPS_SSL_VERIFY": "maybe"}
    with pytest.raises(ConfigError) as caught:
        resolve(env, home=home, root=root)
    assert "ssl_verify" in str(caught.value) and "env REGOPS_SSL_VERIFY" in str(caught.value)
    assert "'maybe'" in str(caught.value)


def test_timeout_not_a_number(home, root):
    write_ini(home / ".python-gitlab.cfg", "[a]\nurl = https://a.example\ntimeout = soon\n")
    with pytest.raises(ConfigError, match=r"timeout: 'soon' \(from ~/.python-gitlab.cfg \[a\]\)"):
        resolve({}, home=home, root=root)
    with pytest.raises(ConfigError, match="more than 0"):
        resolve({"GITLAB_URL": "https://a", "REGOPS_TIMEOUT": "0"}, home=home, root=root)


def test_unknown_auth_mode(home, root):
    env = {
        "GITLAB_URL": "https://gl.example",
        "REGOPS_REGISTRY_URL": "https://r.example",
        "REGOPS_REGISTRY_AUTH": "kerberos",
    }
    with pytest.raises(ConfigError, match=r"registry_auth: unknown mode 'kerberos'.*env "):
        resolve(env, home=home, root=root)


def test_boolean_and_timeout_parse(home, root):
    env = {**BASE_ENV, "REGOPS_SSL_VERIFY": "no", "REGOPS_TIMEOUT": "12.5"}
    s = resolve(env, home=home, root=root)
    assert s.ssl_verify is False and s.timeout == 12.5
    assert s.http_settings().timeout == (3.05, 12.5)  # the connect timeout: CONNECT_TIMEOUT


def test_no_url(home, root):
    with pytest.raises(ConfigError, match="no GitLab URL: set GITLAB_URL"):
        resolve({}, home=home, root=root)


def test_token_without_url_says_where_the_token_was(home, root):
    with pytest.raises(ConfigError, match="a token was found in env GITLAB_PRIVATE_TOKEN"):
        resolve({"GITLAB_PRIVATE_TOKEN": TOKEN}, home=home, root=root)


def test_bad_url(home, root):
    with pytest.raises(ConfigError, match=r"gitlab_url: 'gitlab.example.com' \(from env"):
        resolve({"GITLAB_URL": "gitlab.example.com"}, home=home, root=root)


def test_key_auth_without_key(home, root):
    env = {
        **BASE_ENV,
        "REGOPS_REGISTRY_URL": "https://r.example",
        "REGOPS_REGISTRY_AUTH": "key",
    }
    with pytest.raises(ConfigError, match=r"'key'.*needs the signing key"):
        resolve(env, home=home, root=root)


def test_auth_without_registry_url(home, root):
    env = {**BASE_ENV, "REGOPS_REGISTRY_AUTH": "anonymous"}
    with pytest.raises(ConfigError, match="no registry URL"):
        resolve(env, home=home, root=root)


def test_basic_needs_user_and_password(home, root):
    env = {
        **BASE_ENV,
        "REGOPS_REGISTRY_URL": "https://r.example",
        "REGOPS_REGISTRY_AUTH": "basic",
        "REGOPS_REGISTRY_USER": "u",
    }
    with pytest.raises(ConfigError, match="REGOPS_REGISTRY_PASSWORD"):
        resolve(env, home=home, root=root)
    s = resolve({**env, "REGOPS_REGISTRY_PASSWORD": "registry-pw-123"}, home=home, root=root)
    assert s.registry_password == Secret("registry-pw-123")


def test_inferred_modes(home, root):
    no_token = {"GITLAB_URL": "https://gl.example", "REGOPS_REGISTRY_URL": "https://r.example"}
    assert collect(no_token, home=home, root=root).registry_auth == "anonymous"
    base = {**BASE_ENV, "REGOPS_REGISTRY_URL": "https://r.example"}
    s = resolve(base, home=home, root=root)
    assert (
        s.registry_auth == "realm" and s.sources["registry_auth"] == "inferred (GitLab token set)"
    )
    s = resolve(
        {**base, "REGOPS_REGISTRY_USER": "u", "REGOPS_REGISTRY_PASSWORD": "pw-123456"},
        home=home,
        root=root,
    )
    assert s.registry_auth == "basic"
    s = resolve({**base, "REGOPS_REGISTRY_KEY": "/k.pem"}, home=home, root=root)
    assert s.registry_auth == "key"


def test_no_token(home, root):
    with pytest.raises(ConfigError, match=r"no GitLab token for https://gl\.example"):
        resolve({"GITLAB_URL": "https://gl.example"}, home=home, root=root)


# -- secrets -----------------------------------------------------------------------------


def test_repr_and_rows_hide_secrets(home, root):
    env = {
        "GITLAB_URL": "https://gl.example",
        "GITLAB_PRIVATE_TOKEN": TOKEN,
        "REGOPS_REGISTRY_URL": "https://r.example",
        "REGOPS_REGISTRY_USER": "u",
        "REGOPS_REGISTRY_PASSWORD": "registry-pw-secret",
    }
    s = resolve(env, home=home, root=root)
    text = repr(s) + str(s.rows())
    assert TOKEN not in text and "registry-pw-secret" not in text
    assert "***" in text
    rows = {name: (value, source) for name, value, source in s.rows()}
    assert rows["token"] == ("***", "env GITLAB_PRIVATE_TOKEN")
    assert rows["registry_issuer"] == ("gitlab-issuer", "default")


def test_config_command(home, root, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(home))
    for var in (
        "GITLAB_URL",
        "CI_SERVER_URL",
        "PYTHON_GITLAB_CFG",
        "XDG_CONFIG_HOME",
        "GITLAB_PRIVATE_TOKEN",
        "GITLAB_OAUTH_TOKEN",
        "CI_JOB_TOKEN",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("REGOPS_GITLAB_YML", str(write_gitlab_yml(root)))
    assert main(["config"]) == 1  # everything but the token, from gitlab.yml
    out, err = capsys.readouterr()
    assert "omnibus-gitlab-issuer" in out
    assert "no GitLab token" in err
    monkeypatch.setenv("GITLAB_PRIVATE_TOKEN", TOKEN)
    assert main(["config"]) == 0
    out, err = capsys.readouterr()
    assert TOKEN not in out + err
    assert "env GITLAB_PRIVATE_TOKEN" in out and "***" in out


@responses.activate
def test_config_check_connects(home, root, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(home))
    for var in ("PYTHON_GITLAB_CFG", "XDG_CONFIG_HOME", "CI_SERVER_URL", "CI_JOB_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GITLAB_URL", "https://gl.example")
    monkeypatch.setenv("GITLAB_PRIVATE_TOKEN", TOKEN)
    monkeypatch.setenv("REGOPS_GITLAB_YML", str(write_gitlab_yml(root)))
    # doc/api/users.md and doc/api/version.md example shapes (trimmed)
    responses.get(
        "https://gl.example/api/v4/user",
        json={"id": 1, "username": "root", "name": "Administrator", "is_admin": True},
    )
    responses.get(
        "https://gl.example/api/v4/version", json={"version": "8.13.0-pre", "revision": "4e963fe"}
    )
    responses.get("https://gl.example/api/v4/projects", json=[])  # no project: no registry told
    assert main(["config", "--check"]) == 0
    out = capsys.readouterr().out
    assert "8.13.0-pre" in out and "root" in out and TOKEN not in out


def test_collect_does_not_check(home, root):
    s = collect_settings(environ={}, home=home, system_root=root)
    assert s.gitlab_url is None
    with pytest.raises(ConfigError):
        s.check()


def test_unreadable_default_gitlab_yml_is_skipped(home, root, monkeypatch):
    # On the GitLab host a non-root user may not read gitlab.yml: not an error by default.
    path = write_gitlab_yml(root)
    real_read_text = Path.read_text

    def read_text(self, *args, **kwargs):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    assert collect({}, home=home, root=root).gitlab_url is None
    with pytest.raises(ConfigError, match="permission denied"):
        collect({"REGOPS_GITLAB_YML": str(path)}, home=home, root=root)


def test_unparsable_ini_error_does_not_quote_the_token(home, root):
    write_ini(
        home / ".python-gitlab.cfg", f"[local]\nurl = https://gl.example\nprivate_token {TOKEN}\n"
    )
    with pytest.raises(ConfigError) as info:
        resolve(home=home, root=root)
    assert TOKEN not in str(info.value)
    assert "line 3" in str(info.value)


def test_ini_without_section_error_does_not_quote_the_token(home, root):
    write_ini(home / ".python-gitlab.cfg", f"private_token = {TOKEN}\n")
    with pytest.raises(ConfigError) as info:
        resolve(home=home, root=root)
    assert TOKEN not in str(info.value)


def test_url_password_hidden_in_repr_and_errors(home, root):
    env = {
        "GITLAB_URL": "https://admin:url-pw-secret@gl.example",
        "REGOPS_REGISTRY_URL": "https://u:reg-url-pw@r.example",
    }
    settings = collect(env, home=home, root=root)
    text = repr(settings) + str(settings.rows())
    assert "url-pw-secret" not in text and "reg-url-pw" not in text
    assert "gl.example" in text
    assert (settings.gitlab_host, settings.registry_host) == ("gl.example", "r.example")
    with pytest.raises(ConfigError) as info:
        settings.check()  # no token
    assert "url-pw-secret" not in str(info.value)


def test_gitlab_yml_bad_port_is_a_config_error(home, root):
    yml = root / "var/opt/gitlab/gitlab-rails/etc/gitlab.yml"
    yml.parent.mkdir(parents=True)
    yml.write_text("production:\n  gitlab:\n    host: gl.example\n    port: eighty\n")
    with pytest.raises(ConfigError, match="port"):
        collect(home=home, root=root)
