"""Sandbox stand-in details a GitLab client would notice: links, visibility, logs, threads."""

from __future__ import annotations

import io
import logging
import sys
import threading

import pytest
import requests

from regops.sandbox import _RedactingHandler
from regops.sandbox.state import SandboxState
from tests.leaks import assert_hidden

pytestmark = pytest.mark.registry
ROUNDS = 25  # per thread: every change saves the whole state, so keep it short


def _get(sandbox, path, token, **params):
    headers = {"PRIVATE-TOKEN": token.reveal()} if token is not None else {}
    url = f"{sandbox.gitlab_url}/api/v4{path}"
    return requests.get(url, params=params, headers=headers, timeout=5)


def test_links_never_echo_any_credential_query_parameter(sandbox):
    token = sandbox.admin_token.reveal()
    url = f"{sandbox.gitlab_url}/api/v4/projects"
    offset = requests.get(url, params={"access_token": token, "per_page": 2}, timeout=5)
    assert offset.status_code == 200 and set(offset.links) == {"next", "first", "last"}
    keyset = requests.get(
        url,
        params={"access_token": token, "per_page": 2, "pagination": "keyset", "order_by": "id"},
        timeout=5,
    )
    assert keyset.status_code == 200 and "next" in keyset.links
    for answer in (offset, keyset):
        assert_hidden(token, answer.headers["Link"])
        assert "access_token" not in answer.headers["Link"]


def test_keyset_desc_walks_down_with_id_before(sandbox):
    params = {"pagination": "keyset", "order_by": "id", "sort": "desc", "per_page": 4}
    first = _get(sandbox, "/projects", sandbox.admin_token, **params)
    ids = [p["id"] for p in first.json()]
    assert ids == sorted(ids, reverse=True) and len(ids) == 4
    link = first.links["next"]["url"]
    assert f"id_before={ids[-1]}" in link and "id_after" not in link
    rest = requests.get(link, headers={"PRIVATE-TOKEN": sandbox.admin_token.reveal()}, timeout=5)
    more = [p["id"] for p in rest.json()]
    assert more == sorted(more, reverse=True) and all(i < ids[-1] for i in more)
    assert "next" not in rest.links and len(set(ids + more)) == 6


def test_bad_pagination_parameter_names_itself(sandbox):
    answer = _get(sandbox, "/projects", sandbox.admin_token, per_page="many")
    assert answer.status_code == 400 and answer.json() == {"error": "per_page is invalid"}


def test_private_group_is_hidden_from_non_members(sandbox):
    viewer = sandbox.user("viewer").token  # Reporter in platform/* only
    assert _get(sandbox, "/groups/apps/projects", viewer).status_code == 200  # apps/web
    hidden = _get(sandbox, "/groups/apps%2Fmobile/projects", viewer)
    assert hidden.status_code == 404 and hidden.json() == {"message": "404 Group Not Found"}
    dev = sandbox.user("dev").token  # Developer of group apps only
    assert _get(sandbox, "/groups/platform/projects", dev).status_code == 404
    mobile = _get(sandbox, "/groups/apps%2Fmobile/projects", dev)
    assert {p["path_with_namespace"] for p in mobile.json()} == {
        "apps/mobile/android",
        "apps/mobile/ios",
    }


def test_access_log_masks_tokens(sandbox):
    token = sandbox.user_token.reveal()
    handler = _RedactingHandler.__new__(_RedactingHandler)
    stream = io.StringIO()
    logger = logging.getLogger("werkzeug")
    sink = logging.StreamHandler(stream)
    logger.addHandler(sink)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        handler.client_address = ("127.0.0.1", 1)
        handler.log("info", '"%s" %s %s', f"GET /api/v4/user?private_token={token}", 200, 10)
    finally:
        logger.removeHandler(sink)
        logger.setLevel(old_level)
    assert "GET /api/v4/user?private_token=" in stream.getvalue()
    assert_hidden(token, stream.getvalue())


@pytest.fixture
def switch_often():
    """Make the interpreter switch threads every microsecond: races show up at once."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def test_state_saves_while_other_threads_change_it(tmp_path, switch_often):
    state = SandboxState(tmp_path)
    root = state.add_user("root", admin=True)
    group = state.add_group("g")
    errors: list[BaseException] = []
    threads_count = 6
    start = threading.Barrier(threads_count)

    def churn(offset: int) -> None:
        try:
            start.wait()  # every thread starts changing the state at the same moment
            for i in range(ROUNDS):
                path = f"g/p{offset}-{i}"
                state.repository_record(path)
                state.mark_repository_deleted(path)
                state.restore_repository(path)
                state.add_group(f"s{offset}-{i}", parent=group)
                state.group_tree_ids(group)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    ids = [g.id for g in state.groups.values()]
    assert len(ids) == len(set(ids)) == 1 + threads_count * ROUNDS  # no id handed out twice
    assert len(state.group_tree_ids(group)) == 1 + threads_count * ROUNDS
    assert state.deleted_repositories == set() and state.repositories == {}
    saved = SandboxState.load(tmp_path)  # the last save holds everything, whole
    assert saved.users[root.id].username == "root"
    assert len(saved.groups) == 1 + threads_count * ROUNDS
