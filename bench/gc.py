"""Benchmark: ``regops gc plan`` vs the real ``garbage-collect --dry-run`` (same store, cold),
plan memory against tags and blobs, and ``storage compare`` requests on S3.

Writes a filesystem registry storage directly in the layout (real sha256
digests, Docker schema 2 manifests): ``--repositories`` x ``--tags-per-repo``
tagged images of a config, a shared base layer and an own layer, plus
deleted images (garbage) and untagged manifests, for at least ``--blobs``
blobs. Then, in one run:

1. cold (page cache dropped when /proc/sys/vm/drop_caches is writable, as
   root) wall time of ``docker-registry garbage-collect --dry-run [-m]`` and
   of ``regops.ops.gc.plan`` on the same store, both with and without -m, and
   that their three numbers agree;
2. the plan's peak Python memory (tracemalloc, in a fresh process) on the
   store, and on the same store with 4x the tags (extra tags on the same
   manifests): memory should follow distinct blobs, not tags;
3. a smaller store copied to a moto S3 bucket, ``storage compare`` between
   the folder and the bucket, and the requests the moto server saw.

    python bench/gc.py                      # >= 20,000 blobs, 6,000 tags (a few minutes)
    python bench/gc.py --repositories 30 --tags-per-repo 20 --blobs 2000   # a quick look

Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from regops.ops.gc import plan
from regops.ops.storage_check import compare
from regops.registry.backends import FilesystemBackend, S3Backend, S3Location
from regops.sandbox.s3 import ACCESS_KEY, REGION, SECRET_KEY, MotoServer

V2 = Path("docker", "registry", "v2")
SUMMARY = re.compile(r"^(\d+) blobs marked, (\d+) blobs and (\d+) manifests eligible", re.M)
DROP_CACHES = Path("/proc/sys/vm/drop_caches")
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


class StoreWriter:
    """Writes blobs and links straight into a filesystem registry layout."""

    def __init__(self, root: Path, seed: int = 7) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.blobs = 0

    def blob(self, data: bytes) -> str:
        hexpart = hashlib.sha256(data).hexdigest()
        folder = self.root / V2 / "blobs" / "sha256" / hexpart[:2] / hexpart
        if not folder.exists():
            folder.mkdir(parents=True)
            (folder / "data").write_bytes(data)
            self.blobs += 1
        return f"sha256:{hexpart}"

    def link(self, path: Path, digest: str) -> None:
        path.mkdir(parents=True, exist_ok=True)
        (path / "link").write_text(digest)

    def image(self, repo: str, base: str, base_size: int) -> str:
        layer = self.rng.randbytes(self.rng.randint(64, 512))
        config = json.dumps({"architecture": "amd64", "os": "linux", "n": self.rng.random()})
        layer_digest = self.blob(layer)
        config_digest = self.blob(config.encode())
        document = {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": len(config),
                "digest": config_digest,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": base_size,
                    "digest": base,
                },
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": len(layer),
                    "digest": layer_digest,
                },
            ],
        }
        manifest = self.blob(json.dumps(document).encode())
        repo_dir = self.root / V2 / "repositories" / repo
        for digest in (config_digest, layer_digest, base):
            self.link(repo_dir / "_layers" / "sha256" / digest[7:], digest)
        self.link(repo_dir / "_manifests" / "revisions" / "sha256" / manifest[7:], manifest)
        return manifest

    def tag(self, repo: str, tag: str, manifest: str) -> None:
        tag_dir = self.root / V2 / "repositories" / repo / "_manifests" / "tags" / tag
        self.link(tag_dir / "current", manifest)
        self.link(tag_dir / "index" / "sha256" / manifest[7:], manifest)


def build_store(root: Path, repositories: int, tags_per_repo: int, min_blobs: int) -> dict:
    writer = StoreWriter(root)
    manifests: dict[str, list[str]] = {}
    for r in range(repositories):
        repo = f"group{r % 10}/project{r}/app"
        base_data = writer.rng.randbytes(1024)
        base = writer.blob(base_data)
        manifests[repo] = []
        for t in range(tags_per_repo):
            manifest = writer.image(repo, base, len(base_data))
            writer.tag(repo, f"v{t}", manifest)
            manifests[repo].append(manifest)
        for _ in range(max(1, tags_per_repo // 10)):  # untagged manifests (-m deletes them)
            writer.image(repo, base, len(base_data))
    min_blobs = max(min_blobs, writer.blobs + writer.blobs // 20)  # always some garbage
    while writer.blobs < min_blobs:  # deleted images: blobs nothing links any more
        writer.blob(writer.rng.randbytes(writer.rng.randint(64, 512)))
    return {"blobs": writer.blobs, "tags": repositories * tags_per_repo, "manifests": manifests}


def add_tags(root: Path, manifests: dict[str, list[str]], factor: int) -> int:
    """More tags on the same manifests (no new blob); the number of tags added."""
    writer = StoreWriter(root)
    added = 0
    for repo, digests in manifests.items():
        for extra in range(1, factor):
            for index, digest in enumerate(digests):
                writer.tag(repo, f"x{extra}-{index}", digest)
                added += 1
    return added


def drop_caches() -> bool:
    try:
        os.sync()
        DROP_CACHES.write_text("3\n")
        return True
    except OSError:
        return False


def collector(config: Path, untagged: bool) -> tuple[float, tuple[int, ...]]:
    command = ["docker-registry", "garbage-collect", "--dry-run", *(["-m"] if untagged else [])]
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    started = time.perf_counter()
    done = subprocess.run([*command, str(config)], capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"collector failed: {done.stderr[-500:]}")
    return elapsed, tuple(int(n) for n in SUMMARY.findall(done.stdout)[-1])


def timed_plan(root: Path, untagged: bool) -> tuple[float, tuple[int, ...]]:
    started = time.perf_counter()
    result = plan(FilesystemBackend(root), untagged=untagged, attribute=False)
    return time.perf_counter() - started, result.counts


PEAK_SCRIPT = """
import sys, tracemalloc
from regops.ops.gc import plan
from regops.registry.backends import FilesystemBackend
tracemalloc.start()
plan(FilesystemBackend(sys.argv[1]), untagged=sys.argv[2] == "1", attribute=False)
print(tracemalloc.get_traced_memory()[1])
"""


def peak_memory(root: Path, untagged: bool) -> int:
    done = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(root), "1" if untagged else "0"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.strip())


def s3_compare(work: Path, repositories: int, tags: int) -> dict:
    root = work / "s3-source"
    stats = build_store(root, repositories, tags, 0)
    with MotoServer(work / "moto") as moto:
        bucket = moto.create_bucket("bench-registry")
        client = moto.client()
        objects = 0
        for folder, _dirs, names in os.walk(root):
            for name in names:
                path = Path(folder, name)
                key = path.relative_to(root).as_posix()
                client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
                objects += 1
        client.close()
        location = S3Location(
            bucket,
            "",
            region=REGION,
            regionendpoint=moto.endpoint,
            accesskey=ACCESS_KEY,
            secretkey=SECRET_KEY,
            secure=False,
        )
        before = moto.request_count()
        backend = S3Backend(location)
        report = compare(FilesystemBackend(root), backend)
        seen = moto.request_count() - before
        backend.close()
    return {
        "objects": objects,
        "blobs": stats["blobs"],
        "differences": len(report.differences),
        "requests_at_moto": seen,
        "requests_counted_by_client": report.destination_requests,
        "pages_expected": -(-objects // 1000),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repositories", type=int, default=300)
    parser.add_argument("--tags-per-repo", type=int, default=20)
    parser.add_argument("--blobs", type=int, default=20000)
    parser.add_argument("--s3-repositories", type=int, default=30)
    parser.add_argument("--s3-tags-per-repo", type=int, default=20)
    parser.add_argument("--work", type=Path, help="keep the stores here")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="regops-bench-gc-"))
    root = work / "storage"
    started = time.perf_counter()
    stats = build_store(root, args.repositories, args.tags_per_repo, args.blobs)
    config = work / "config.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "version": 0.1,
                "log": {"level": "error"},
                "storage": {"filesystem": {"rootdirectory": str(root)}},
            }
        )
    )
    print(
        f"store: {stats['blobs']} blobs, {stats['tags']} tags, "
        f"{args.repositories} repositories ({time.perf_counter() - started:.1f} s to write)"
    )
    cold = drop_caches()
    print(f"page cache dropped before each run: {cold}")
    agree = True
    for untagged in (False, True):
        drop_caches()
        gc_time, gc_counts = collector(config, untagged)
        drop_caches()
        plan_time, plan_counts = timed_plan(root, untagged)
        agree &= gc_counts == plan_counts
        flag = " -m" if untagged else "   "
        print(
            f"dry-run{flag}: collector {gc_time:6.2f} s {gc_counts} | plan {plan_time:6.2f} s "
            f"{plan_counts} | plan/collector {plan_time / gc_time:.2f}"
        )
    base_peak = peak_memory(root, True)
    added = add_tags(root, stats["manifests"], 4)
    more_peak = peak_memory(root, True)
    print(
        f"plan -m peak memory: {base_peak / 1e6:.1f} MB at {stats['tags']} tags; "
        f"{more_peak / 1e6:.1f} MB at {stats['tags'] + added} tags (same blobs): "
        f"x{more_peak / base_peak:.2f}; {base_peak / stats['blobs']:.0f} bytes per blob"
    )
    s3 = s3_compare(work, args.s3_repositories, args.s3_tags_per_repo)
    print(
        f"storage compare folder vs S3: {s3['objects']} objects, {s3['differences']} "
        f"differences, {s3['requests_at_moto']} requests at moto "
        f"({s3['pages_expected']} listing pages expected)"
    )
    if not agree:
        print("PLAN AND COLLECTOR DISAGREE")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
