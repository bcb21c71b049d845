"""Seed profiles: users, groups, projects, policies and REAL images in the registry.

``demo``: a small, varied instance for trying regops by hand and for tests:

==========================  ===============================================  ==========
project                     repositories (tags)                              policy
==========================  ===============================================  ==========
platform/base-images        (root): alpine-3.18 alpine-3.19 stable latest    enabled
                            debian: bookworm bullseye latest
platform/tools              ci: 1.0 (multi-arch OCI index) 0.9 latest        enabled, keep regex
                            lint: 2024.01 … 2024.06
apps/web                    (root): v1.0 … v1.5 latest stable, main-* daily  disabled
                            frontend, backend (+ an untagged manifest)
apps/mobile/android         (root): build-1 … build-8 latest                 INVALID regex
apps/mobile/ios             (none)                                           default
root/scratch                (none)                                           default
==========================  ===============================================  ==========

Users: ``root`` (admin), ``dev`` (Developer of group ``apps``), ``viewer``
(Reporter of ``platform/base-images``). Every image shares one base layer
(mounted across repositories); ``latest`` and ``stable`` share a digest with
the newest version; build times run from hours to months ago.

``bench``: ``projects`` × ``repositories`` × ``tags`` in group ``bench``;
``distinct_share`` of the tags have their own image, the rest point at one of
those. Pushed in parallel.
"""

from __future__ import annotations

import datetime
import math
import random
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from regops.errors import ValidationError
from regops.registry.layout import LINK_FILE, MANIFESTS_DIR, REPOSITORIES_ROOT
from regops.sandbox import images
from regops.sandbox.images import Image, Layer, build_image, build_index, days_ago, random_layer
from regops.sandbox.state import DEVELOPER, REPORTER

if TYPE_CHECKING:
    from regops.sandbox import Sandbox

PROFILES = ("demo", "bench")
SMALL_LAYER = 1024  # bytes of random payload per app layer: seeding stays fast
BASE_LAYER = 4096  # the shared base layer, a little bigger so sharing is visible in sizes
PUSH_WORKERS = 8  # concurrent repositories pushed while seeding
# Sizes of the per-repository layers bench images pick from (varied, still small).
BENCH_LAYER_SIZES = (512, 1024, 1536)
INVALID_REGEX = "build-[0-9+"  # RE2 rejects it (missing ]): exercises policy audits


class BenchDefaults(TypedDict):
    projects: int
    repositories: int
    tags: int
    distinct_share: float


BENCH_DEFAULTS: BenchDefaults = {
    "projects": 50,
    "repositories": 3,
    "tags": 40,
    "distinct_share": 0.33,
}


@dataclass
class SeedSummary:
    """What a seed created (counts are what the registry now holds)."""

    profile: str
    users: list[str] = field(default_factory=list)
    projects: list[str] = field(default_factory=list)
    repositories: int = 0
    tags: int = 0
    manifests: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def seed(sandbox: Sandbox, profile: str = "demo", **options: Any) -> dict[str, Any]:
    """Seed ``sandbox`` with ``profile``; returns a summary dict."""
    if profile == "demo":
        if options:
            raise ValidationError("options", f"the demo profile takes none, got {sorted(options)}")
        return seed_demo(sandbox).as_dict()
    if profile == "bench":
        return seed_bench(sandbox, **options).as_dict()
    raise ValidationError("profile", f"unknown seed profile {profile!r}; use one of {PROFILES}")


# ------------------------------------------------------------------------ pushing
@dataclass
class Push:
    """One manifest (image or index) to push into a repository under some tags."""

    repository: str
    image: Image | images.Index
    tags: tuple[str, ...] = ()


def _push_all(
    sandbox: Sandbox, pushes: list[Push], mount_from: str | None, shared: Collection[str] = ()
) -> int:
    """Push everything; one worker per repository, in order inside a repository.

    Pushes into the same repository stay sequential: concurrent mounts of one
    blob into one repository race in the registry (MANIFEST_BLOB_UNKNOWN).
    Only ``shared`` blobs are mounted from ``mount_from``.
    """
    client = sandbox.registry
    by_repo: dict[str, list[Push]] = {}
    for push in pushes:
        by_repo.setdefault(push.repository, []).append(push)

    def run(items: list[Push]) -> int:
        for item in items:
            repo, image, tags = item.repository, item.image, item.tags
            if isinstance(image, images.Index):
                images.push_index(
                    client, repo, image, tags, mount_from=mount_from, shared=set(shared)
                )
            else:
                images.push_image(
                    client, repo, image, tags, mount_from=mount_from, shared=set(shared)
                )
        return len(items)

    # Largest repositories first, so the longest sequence starts at once.
    ordered = sorted(by_repo.values(), key=len, reverse=True)
    with ThreadPoolExecutor(max_workers=PUSH_WORKERS) as pool:
        return sum(pool.map(run, ordered))


def _image(
    base: Layer, created: datetime.datetime, *, oci: bool = False, arch: str = "amd64"
) -> Image:
    return build_image([base, random_layer(SMALL_LAYER)], created, oci=oci, architecture=arch)


# --------------------------------------------------------------------------- demo
def seed_demo(sandbox: Sandbox) -> SeedSummary:
    """The demo instance described in the module docstring."""
    state = sandbox.state
    assert state is not None  # seeding runs on a started sandbox
    summary = SeedSummary("demo")
    root, dev = sandbox.user("root"), sandbox.user("dev")
    viewer = state.user_by_username("viewer") or state.add_user("viewer", name="Vi Ewer")
    summary.users = [root.username, dev.username, viewer.username]

    platform = state.add_group("platform")
    apps = state.add_group("apps")
    mobile = state.add_group("mobile", parent=apps)
    age = lambda days: days_ago(days + 1)  # noqa: E731  (projects older than their images)
    base_images = state.add_project(platform, "base-images", creator=root, created_at=age(200))
    tools = state.add_project(platform, "tools", creator=root, created_at=age(150))
    web = state.add_project(apps, "web", creator=dev, created_at=age(120))
    android = state.add_project(mobile, "android", creator=dev, created_at=age(90))
    ios = state.add_project(mobile, "ios", creator=dev, created_at=age(30))
    scratch = state.add_project(root, "scratch", creator=root, created_at=age(10))
    all_projects = (base_images, tools, web, android, ios, scratch)
    summary.projects = [p.full_path for p in all_projects]

    state.add_member(apps, dev, DEVELOPER)
    state.add_member(base_images, viewer, REPORTER)
    state.add_member(web, viewer, REPORTER)

    state.set_policy(
        base_images,
        {
            "enabled": True,
            "cadence": "7d",
            "keep_n": 5,
            "older_than": "30d",
            "name_regex": ".*",
            "name_regex_keep": "stable|latest",
        },
    )
    state.set_policy(
        tools,
        {
            "enabled": True,
            "cadence": "1d",
            "keep_n": 1,
            "older_than": "90d",
            "name_regex": ".*",
            "name_regex_keep": r"\d+\.\d+",
        },
    )
    state.set_policy(
        android,
        {
            "enabled": True,
            "cadence": "1d",
            "keep_n": 5,
            "older_than": "7d",
            "name_regex": INVALID_REGEX,
        },
        validate=False,
    )

    base = random_layer(BASE_LAYER)
    first = Push(base_images.full_path, build_image([base], days_ago(180)), ("alpine-3.18",))
    pushes = _demo_pushes(base)
    _push_all(sandbox, [first], None)
    _push_all(sandbox, pushes, base_images.full_path, {base.digest})
    all_pushes = [first, *pushes]
    summary.manifests = len({p.image.digest for p in all_pushes})
    summary.repositories = len({p.repository for p in all_pushes})
    summary.tags = len({(p.repository, t) for p in all_pushes for t in p.tags})
    return summary


def _demo_pushes(base: Layer) -> list[Push]:
    """Every image of the demo except the very first (which holds the base layer)."""
    pushes: list[Push] = []
    add = lambda repo, image, *tags: pushes.append(Push(repo, image, tags))  # noqa: E731

    # platform/base-images (root repository) and its debian repository.
    root_repo = "platform/base-images"
    newest = _image(base, days_ago(20))
    add(root_repo, _image(base, days_ago(60)), "alpine-3.19-rc1")
    add(root_repo, newest, "alpine-3.19", "stable", "latest")
    for i, name in enumerate(("bullseye", "bookworm")):
        add(f"{root_repo}/debian", _image(base, days_ago(100 - 60 * i)), name)
    add(f"{root_repo}/debian", _image(base, days_ago(2)), "latest")

    # platform/tools: a multi-arch OCI index and a run of monthly lint images.
    now = days_ago(0)
    arm = build_image(
        [base, random_layer(SMALL_LAYER)], days_ago(3), oci=True, architecture="arm64"
    )
    amd = build_image([base, random_layer(SMALL_LAYER)], days_ago(3), oci=True)
    add("platform/tools/ci", build_index([amd, arm], oci=True), "1.0", "latest")
    add("platform/tools/ci", _image(base, days_ago(75), oci=True), "0.9")
    for month in range(1, 7):
        add("platform/tools/lint", _image(base, days_ago(200 - 30 * month)), f"2024.{month:02d}")

    # apps/web: versions (latest and stable share v1.5's digest), daily main builds.
    web = "apps/web"
    for minor in range(6):
        image = _image(base, days_ago(150 - 25 * minor))
        extra = ("latest", "stable") if minor == 5 else ()
        add(web, image, f"v1.{minor}", *extra)
    for day in range(12):
        add(f"{web}/frontend", _image(base, days_ago(day * 5 + 0.5)), f"main-{day:03d}")
    add(f"{web}/frontend", _image(base, now - datetime.timedelta(hours=2)), "latest")
    add(f"{web}/backend", _image(base, days_ago(40)), "v2.0")
    add(f"{web}/backend", _image(base, days_ago(10)), "v2.1", "latest")
    add(f"{web}/backend", _image(base, days_ago(95)))  # an untagged manifest

    # apps/mobile/android: numbered builds, one every ten days.
    for build in range(1, 9):
        add("apps/mobile/android", _image(base, days_ago(90 - 10 * build)), f"build-{build}")
    add("apps/mobile/android", _image(base, days_ago(1)), "latest")
    return pushes


# -------------------------------------------------------------------------- bench
def seed_bench(
    sandbox: Sandbox,
    projects: int = BENCH_DEFAULTS["projects"],
    repositories: int = BENCH_DEFAULTS["repositories"],
    tags: int = BENCH_DEFAULTS["tags"],
    distinct_share: float = BENCH_DEFAULTS["distinct_share"],
    seed_value: int | None = None,
    link_extra_tags: bool = True,
) -> SeedSummary:
    """``projects`` × ``repositories`` × ``tags``; ``distinct_share`` of tags own an image.

    Every image is pushed over HTTP with its first tag. ``link_extra_tags``:
    the other tags of an image are written into the registry's storage as the
    registry itself writes them (a tag PUT of a known manifest only writes
    two link files), which makes a big bench seed several times faster.
    """
    for name, value in (("projects", projects), ("repositories", repositories), ("tags", tags)):
        if not isinstance(value, int) or value < 0:
            raise ValidationError(name, f"must be a non-negative integer, got {value!r}")
    if not 0 < distinct_share <= 1:
        raise ValidationError("distinct_share", f"must be in (0, 1], got {distinct_share!r}")
    state = sandbox.state
    assert state is not None  # seeding runs on a started sandbox
    rng = random.Random(seed_value)
    summary = SeedSummary("bench", users=["root", "dev"])
    root, dev = sandbox.user("root"), sandbox.user("dev")
    group = state.group_by_path("bench") or state.add_group("bench")
    state.add_member(group, dev, DEVELOPER)
    base = random_layer(BASE_LAYER)
    first_repo = None
    pushes: list[Push] = []
    for p in range(projects):
        project = state.add_project(group, f"project-{p:04d}", creator=root)
        summary.projects.append(project.full_path)
        if p % 2 == 0:  # half the projects have an enabled policy
            state.set_policy(project, {"enabled": True, "keep_n": 10, "older_than": "30d"})
        for r in range(repositories):
            repo = project.full_path if r == 0 else f"{project.full_path}/repo-{r}"
            first_repo = first_repo or repo
            pushes.extend(_bench_repository(repo, base, tags, distinct_share, rng))
    if first_repo is not None:
        _push_all(sandbox, [Push(first_repo, build_image([base], days_ago(365)))], None)
    extra: list[tuple[str, str, str]] = []
    if link_extra_tags:
        for push in pushes:
            extra.extend((push.repository, tag, push.image.digest) for tag in push.tags[1:])
            push.tags = push.tags[:1]
    _push_all(sandbox, pushes, first_repo, {base.digest})
    for repo, tag, digest in extra:
        link_tag(sandbox.storage_path, repo, tag, digest)
    summary.repositories = projects * repositories
    summary.tags = projects * repositories * tags
    summary.manifests = len({p.image.digest for p in pushes})
    return summary


def _bench_repository(
    repo: str, base: Layer, tags: int, share: float, rng: random.Random
) -> list[Push]:
    """Pushes for one bench repository: distinct images, then the tags sharing them.

    Images differ by their config (build time) and by one of a few small
    layers of the repository, so a push costs few requests but sizes vary.
    """
    if tags == 0:
        return []
    distinct = max(1, math.ceil(tags * share))
    pool = [_small_layer(rng, size) for size in BENCH_LAYER_SIZES]
    built = [
        build_image([base, pool[i % len(pool)]], days_ago(rng.uniform(0, 180)))
        for i in range(distinct)
    ]
    names: dict[int, list[str]] = {i: [] for i in range(distinct)}
    for t in range(tags):
        target = t if t < distinct else rng.randrange(distinct)
        names[target].append(f"tag-{t:04d}")
    return [Push(repo, built[i], tuple(names[i])) for i in range(distinct)]


def _small_layer(rng: random.Random, size: int = SMALL_LAYER) -> Layer:
    return random_layer(size, seed=rng.getrandbits(64))


def link_tag(storage_root: Any, repo: str, tag: str, digest: str) -> None:
    """Point ``repo:tag`` at a manifest already in ``repo``, as a tag PUT does on disk."""
    base = Path(storage_root) / REPOSITORIES_ROOT / repo / MANIFESTS_DIR
    hex_digest = digest.split(":", 1)[1]
    if not (base / "revisions" / "sha256" / hex_digest / LINK_FILE).exists():
        raise ValidationError("digest", f"{digest} is not a manifest of {repo}")
    tag_dir = base / "tags" / tag
    for folder in (tag_dir / "current", tag_dir / "index" / "sha256" / hex_digest):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / LINK_FILE).write_text(digest)
