"""Registry settings as console objects, the project registry access level, and the recipe
that disables unused registries, against the sandbox (its stand-in + the real registry).

GitLab's rules reproduced (expected values are GitLab's literals, never regops'):

- app/models/application_setting.rb: ``container_registry_token_expire_delay``
  presence, integer, greater than 0; the cleanup worker settings integers >= 0;
  the two booleans ``inclusion: [true, false], message: 'must be a boolean value'``;
  a refused PUT answers 400 ``{"message": {field: [messages]}}``.
- doc/api/settings.md: defaults 5, 200, 250, 4, true, false.
- lib/api/helpers/projects_helpers.rb: ``container_registry_access_level``
  ``values: %w[disabled private enabled]`` (Grape: "does not have a valid value").
- app/policies/project_policy.rb ``rule { container_registry_disabled }``
  prevents reading/destroying container images; Auth::ContainerRegistryAuthenticationService
  ``can_access?`` is false for a disabled registry: no token grants anything.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import jwt
import pytest
import requests
import responses

from regops.connection import set_default_connection
from regops.errors import SettingsNotApplied, ValidationError
from regops.gitlab.appsettings import SettingsError
from regops.models import ApplicationSettings, Project
from tests.oracle import repositories, tag_links

pytestmark = pytest.mark.registry

ROOT = Path(__file__).resolve().parent.parent
DEFAULTS = {  # doc/api/settings.md
    "container_registry_token_expire_delay": 5,
    "container_registry_cleanup_tags_service_max_list_size": 200,
    "container_registry_delete_tags_service_timeout": 250,
    "container_registry_expiration_policies_worker_capacity": 4,
    "container_registry_expiration_policies_caching": True,
    "container_expiration_policies_enable_historic_entries": False,
}
UNUSED = ["apps/mobile/ios", "root/scratch"]  # demo projects seeded without images


def api(sandbox, method: str, path: str, **kwargs) -> requests.Response:
    headers = {"PRIVATE-TOKEN": sandbox.admin_token.reveal()}
    return requests.request(
        method, f"{sandbox.gitlab_url}/api/v4{path}", headers=headers, timeout=10, **kwargs
    )


@pytest.fixture
def conn(fresh_sandbox):
    connection = fresh_sandbox.connect("admin", registry_auth="key")
    yield connection
    connection.close()
    set_default_connection(None)


def test_current_settings_are_gitlabs_defaults_and_update_is_read_back(fresh_sandbox, conn):
    settings = ApplicationSettings.current(connection=conn)
    assert settings.registry == DEFAULTS
    settings.update(
        container_registry_token_expire_delay="30",
        container_registry_expiration_policies_caching=False,
    )
    raw = api(fresh_sandbox, "GET", "/application/settings").json()
    assert raw["container_registry_token_expire_delay"] == 30
    assert raw["container_registry_expiration_policies_caching"] is False
    assert settings.container_registry_token_expire_delay == 30
    # the new duration is what /jwt/auth now gives tokens (30 min)
    assert "container_registry_token_expire_delay" in repr(settings)


@pytest.mark.parametrize(
    ("attrs", "field", "message"),
    [
        (
            {"container_registry_token_expire_delay": 0},
            "container_registry_token_expire_delay",
            "must be greater than 0",
        ),
        (
            {"container_registry_delete_tags_service_timeout": -1},
            "container_registry_delete_tags_service_timeout",
            "must be greater than or equal to 0",
        ),
        (
            {"container_registry_expiration_policies_worker_capacity": "1.5"},
            "container_registry_expiration_policies_worker_capacity",
            "must be an integer",
        ),
        (
            {"container_registry_cleanup_tags_service_max_list_size": "many"},
            "container_registry_cleanup_tags_service_max_list_size",
            "is not a number",
        ),
        (
            {"container_expiration_policies_enable_historic_entries": "maybe"},
            "container_expiration_policies_enable_historic_entries",
            "must be a boolean value",
        ),
    ],
)
def test_invalid_values_are_refused_with_gitlabs_message_before_and_by_the_api(
    fresh_sandbox, conn, attrs, field, message
):
    fresh_sandbox.state.reset_counters()
    with pytest.raises(SettingsError) as caught:
        ApplicationSettings.current(connection=conn).update(**attrs)
    assert caught.value.errors == {field: [message]}
    assert fresh_sandbox.state.request_counts["PUT settings"] == 0  # nothing was sent
    answer = api(fresh_sandbox, "PUT", "/application/settings", json=attrs)
    assert (answer.status_code, answer.json()) == (400, {"message": {field: [message]}})
    assert api(fresh_sandbox, "GET", "/application/settings").json()[field] == DEFAULTS[field]


@responses.activate
def test_a_value_gitlab_kept_raises_settings_not_applied():
    from regops.config import resolve_settings
    from regops.connection import Connection

    url = "https://gitlab.example.com/api/v4/application/settings"
    responses.get(url, json=DEFAULTS)
    responses.put(url, json=DEFAULTS)  # success, but nothing changed
    settings = resolve_settings(
        environ={}, home="/nonexistent", url="https://gitlab.example.com", private_token="t" * 20
    )
    with Connection(settings) as conn, pytest.raises(SettingsNotApplied) as caught:
        ApplicationSettings.current(connection=conn).update(container_registry_token_expire_delay=9)
    assert caught.value.fields == {"container_registry_token_expire_delay": (9, 5)}


def jwt_grants(sandbox, repo: str) -> list:
    answer = requests.get(
        f"{sandbox.gitlab_url}/jwt/auth",
        params={"service": "container_registry", "scope": f"repository:{repo}:pull,delete"},
        auth=("root", sandbox.admin_token.reveal()),
        timeout=10,
    )
    claims = jwt.decode(answer.json()["token"], options={"verify_signature": False})
    return claims["access"]


def test_access_level_is_read_and_updated_and_disabling_images_needs_force(fresh_sandbox, conn):
    web = Project.find("apps/web", connection=conn)
    assert web.container_registry_access_level == "enabled"
    web.update_container_registry_access_level("private")
    assert (
        api(fresh_sandbox, "GET", "/projects/apps%2Fweb").json()["container_registry_access_level"]
        == "private"
    )

    storage = fresh_sandbox.storage_path
    before = {repo: tag_links(storage, repo) for repo in repositories(storage)}
    fresh_sandbox.state.reset_counters()
    with pytest.raises(ValidationError, match="has container images"):
        web.update_container_registry_access_level("disabled")
    assert fresh_sandbox.state.request_counts["PUT project"] == 0
    with pytest.raises(ValidationError, match="does not have a valid value"):
        web.update_container_registry_access_level("public")  # pages only (Featurable)

    web.update_container_registry_access_level("disabled", force=True)
    assert web.container_registry_access_level == "disabled"
    # GitLab's consequences: no token grants anything, the repositories are hidden (403)...
    assert jwt_grants(fresh_sandbox, "apps/web/frontend") == []
    assert (
        api(fresh_sandbox, "GET", "/projects/apps%2Fweb/registry/repositories").status_code == 403
    )
    # ...and nothing was deleted: every tag of every repository is still in storage
    assert {repo: tag_links(storage, repo) for repo in repositories(storage)} == before
    web.update_container_registry_access_level("enabled")
    assert jwt_grants(fresh_sandbox, "apps/web/frontend")[0]["actions"] == ["delete", "pull"]

    bad = api(
        fresh_sandbox,
        "PUT",
        "/projects/apps%2Fweb",
        json={"container_registry_access_level": "public"},
    )
    assert (bad.status_code, bad.json()) == (
        400,
        {"error": "container_registry_access_level does not have a valid value"},
    )


def load_recipe():
    spec = importlib.util.spec_from_file_location(
        "recipe_disable_unused_registries", ROOT / "recipes" / "disable_unused_registries.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def levels(sandbox) -> dict[str, str]:
    rows = api(sandbox, "GET", "/projects", params={"per_page": 100}).json()
    return {p["path_with_namespace"]: p["container_registry_access_level"] for p in rows}


def test_recipe_lists_then_disables_only_unused_registries(fresh_sandbox, monkeypatch, capsys):
    for key, value in fresh_sandbox.env().items():
        monkeypatch.setenv(key, value)
    storage = fresh_sandbox.storage_path
    with_images = {r for r in repositories(storage) if tag_links(storage, r)}
    for path in UNUSED:  # the storage agrees these have no image
        assert not any(r == path or r.startswith(path + "/") for r in with_images)
    before_levels = levels(fresh_sandbox)
    before_tags = {repo: tag_links(storage, repo) for repo in repositories(storage)}
    recipe = load_recipe()

    assert recipe.main([]) == 0
    out, err = capsys.readouterr()
    assert sorted(line.split(",")[1] for line in out.splitlines()) == UNUSED
    assert "dry run, nothing changed: 2 of 6 projects" in err
    assert levels(fresh_sandbox) == before_levels

    assert recipe.main(["--execute"]) == 0
    out, err = capsys.readouterr()
    assert "disabled 2, kept 0 (images since), failed 0" in err
    after = levels(fresh_sandbox)
    assert {p for p, level in after.items() if level == "disabled"} == set(UNUSED)
    assert {p: v for p, v in after.items() if p not in UNUSED} == {
        p: v for p, v in before_levels.items() if p not in UNUSED
    }
    assert {repo: tag_links(storage, repo) for repo in repositories(storage)} == before_tags
    assert recipe.main(["-q"]) == 0  # nothing left to do, and quiet
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    set_default_connection(None)
