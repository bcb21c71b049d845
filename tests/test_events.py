"""The events store and receiver without a registry: status codes, idempotence, schema,
queries (``Event.where``), CSV and the ``regops events`` command.

Envelopes follow Distribution's notifications docs (an ``events`` list of
objects with ``id``, ``timestamp``, ``action``, ``target``, ``request``,
``actor``, ``source``).
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import sqlite3

import pytest
import requests

from regops import cli
from regops.commands.events import ReceiverApp, ReceiverServer
from regops.errors import StateError
from regops.models import Event
from regops.ops.events import SCHEMA_VERSION, EventStore, receive
from regops.secrets import Secret
from tests.leaks import assert_hidden

SECRET = Secret("events-unit-" + "secret-value-99")


def event(
    number: int, action: str = "push", repo: str = "g/app", when: str = "2024-05-01T10:00:00Z"
):
    return {
        "id": f"event-{number}",
        "timestamp": when,
        "action": action,
        "target": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "size": 100 + number,
            "digest": f"sha256:{number:064x}",
            "repository": repo,
            "url": f"http://registry/v2/{repo}/manifests/sha256:{number:064x}",
            "tag": f"v{number}",
        },
        "request": {
            "id": "r",
            "addr": "127.0.0.1:1",
            "host": "registry",
            "method": "PUT",
            "useragent": "skopeo",
        },
        "actor": {"name": "root"},
        "source": {"addr": "registry:5000", "instanceID": "i-1"},
    }


def envelope(*events) -> bytes:
    return json.dumps({"events": list(events)}).encode()


@pytest.fixture
def store(tmp_path):
    with EventStore(tmp_path / "events.sqlite3") as made:
        yield made


def test_receive_checks_the_secret_then_the_body_then_stores_once(store):
    assert receive(store, SECRET, None, envelope(event(1))).status == 401
    assert receive(store, SECRET, "Bearer " + SECRET.reveal(), envelope(event(1))).status == 401
    assert receive(store, SECRET, SECRET.reveal()[:-1], envelope(event(1))).status == 401
    assert store.count() == 0
    for body in (
        b"not json",
        b"[]",
        b'{"events": {}}',
        envelope({"action": "push"}),
        envelope({"id": "x"}),
        envelope("text"),
    ):
        answer = receive(store, SECRET, SECRET.reveal(), body)
        assert answer.status == 400, body
    first = receive(store, SECRET, SECRET.reveal(), envelope(event(1), event(2)))
    again = receive(store, SECRET, SECRET.reveal(), envelope(event(2), event(3)))
    assert (first.status, first.body) == (200, {"stored": 2, "duplicates": 0})
    assert (again.status, again.body) == (200, {"stored": 1, "duplicates": 1})
    with sqlite3.connect(store.path) as db:
        rows = db.execute("SELECT id, repository, tag, size FROM events ORDER BY id").fetchall()
    assert rows == [
        ("event-1", "g/app", "v1", 101),
        ("event-2", "g/app", "v2", 102),
        ("event-3", "g/app", "v3", 103),
    ]


def test_database_is_wal_versioned_and_refuses_a_newer_schema(tmp_path):
    path = tmp_path / "events.sqlite3"
    with EventStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION == 1
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
        db.execute("PRAGMA user_version = 7")
    with pytest.raises(StateError, match="schema version 7 is newer"):
        EventStore(path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_http_listener_status_codes(store):
    app = ReceiverApp(store, SECRET)
    with ReceiverServer(app) as server:
        good = SECRET.reveal()
        post = lambda body, auth=good, url=server.url: requests.post(  # noqa: E731
            url, data=body, headers={"Authorization": auth} if auth else {}, timeout=5
        )
        assert post(envelope(event(1)), auth=None).status_code == 401
        assert post(b"{", auth=SECRET.reveal()).status_code == 400
        assert post(envelope(event(1))).json() == {"stored": 1, "duplicates": 0}
        assert requests.get(server.url, timeout=5).status_code == 405
        assert post(envelope(), url=server.url + "x").status_code == 404
        big = b'{"events": [' + b" " * (11 * 1024 * 1024) + b"]}"
        assert post(big).status_code == 413
    assert store.count() == 1


def test_event_where_filters_in_sqlite_and_exports_csv(store, tmp_path):
    now = datetime.datetime.now(datetime.timezone.utc)
    recent = (now - datetime.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    store.add(
        [
            event(1, when="2024-05-01T10:00:00Z"),
            event(2, when=recent),
            event(3, action="delete", when=recent),
            event(4, repo="g/other", when=recent),
        ]
    )
    query = Event.where(db=store.path, repository="g/app", action="push", since="1h")
    assert [e.id for e in query] == ["event-2"]
    assert [
        e.id
        for e in Event.where(
            db=store.path, since="2024-05-01T00:00:00Z", until="2024-05-02T00:00:00Z"
        )
    ] == ["event-1"]
    assert [e.id for e in Event.where(db=store.path, action="delete")] == ["event-3"]
    with pytest.raises(Exception, match="cannot filter on colour"):
        Event.where(db=store.path, colour="red")
    out = io.StringIO()
    Event.where(db=store.path, repository="g/app").to_csv(out)
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == ["timestamp", "action", "repository", "tag", "digest", "actor"]
    assert [r[1] for r in rows[1:]] == ["push", "push", "delete"]


def test_events_list_command_csv_and_bad_since(store, capsys):
    store.add([event(1), event(2, action="delete")])
    assert (
        cli.main(
            ["events", "list", "--db", str(store.path), "--action", "delete", "--format", "csv"]
        )
        == 0
    )
    out = capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["id"], r["action"], r["tag"]) for r in rows] == [("event-2", "delete", "v2")]
    assert cli.main(["events", "--db", str(store.path), "--since", "yesterday-ish"]) == 2
    assert "since" in capsys.readouterr().err


def test_serve_without_a_secret_is_bad_usage(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("REGOPS_NOTIFICATION_SECRET", raising=False)
    missing = tmp_path / "gitlab.yml"
    missing.write_text("production: {registry: {enabled: true}}\n")
    code = cli.main(
        ["events", "serve", "--gitlab-config", str(missing), "--db", str(tmp_path / "e.sqlite3")]
    )
    assert code == 2
    assert "no shared secret" in capsys.readouterr().err
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET.reveal() + "\n")
    assert_hidden(SECRET, capsys.readouterr().err)
