"""Images: content-hashed tags, a warm build that rebuilds nothing, list and load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import RUN_ID, run_cli

from testbed import images
from testbed.images.catalog import BASE, NODE
from testbed.provider.docker import DockerProvider


def test_tag_follows_the_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = images.resolve(NODE).tag
    assert images.resolve(NODE).tag == before, "the hash is a pure function of the inputs"
    fake = tmp_path / "images"
    fake.mkdir()
    import shutil

    from testbed.images import build
    shutil.copytree(build.IMAGES_DIR, fake, dirs_exist_ok=True)
    (fake / "node" / "Dockerfile").write_text((fake / "node" / "Dockerfile").read_text() + "\n#")
    monkeypatch.setattr(build, "IMAGES_DIR", fake)
    assert images.resolve(NODE).tag != before, "an edited Dockerfile changes the tag"
    assert images.resolve(BASE).tag.startswith("testbed/base:")


@pytest.mark.docker
def test_warm_build_rebuilds_nothing(provider: DockerProvider, built: dict[str, str]) -> None:
    created = {name: provider.client.images.get(tag).attrs["Created"]
               for name, tag in built.items()}
    res = run_cli("images", "build", "--cni", "flannel")
    assert res.returncode == 0, res.stderr
    assert "Building" not in res.stderr and "compiling" not in res.stderr
    for name, tag in built.items():
        assert provider.client.images.get(tag).attrs["Created"] == created[name]


@pytest.mark.docker
def test_list_shows_source_and_upstream_images(built: dict[str, str]) -> None:
    res = run_cli("images", "list", "--json")
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["node"]["present"] is True and rows["node"]["ref"] == built["node"]
    assert rows["flannel"]["kind"] == "source" and rows["flannel"]["present"] is True
    assert rows["flannel"]["upstream"].startswith("docker.io/flannel/flannel:v0.28.")
    upstream = [r for r in rows.values() if r["kind"] == "upstream"]
    assert {r["cni"] for r in upstream} == {"flannel", "calico", "weave"}
    assert all(not r["ref"].startswith("testbed/") for r in upstream)


@pytest.mark.docker
def test_source_images_carry_the_upstream_build_and_its_provenance(
        provider: DockerProvider, built: dict[str, str]) -> None:
    """Each CNI image holds upstream's binary at upstream's path, and says what built it."""
    expect = {"flannel": ("/opt/bin/flanneld", "github.com/flannel-io/flannel"),
              "calico-node": ("/bin/calico-node", "github.com/projectcalico/calico"),
              "weave": ("/home/weave/weaver", "github.com/weaveworks/weave")}
    for name, (path, module) in expect.items():
        img = provider.client.images.get(built[name])
        assert img.labels["io.testbed.build"] == "source"
        (label,) = [v for k, v in img.labels.items() if k.startswith("io.testbed.source.")]
        prov = json.loads(label)
        assert prov["module"] == module and prov["sum"].startswith("h1:")
        assert prov["go"].startswith("go1.")
        out = provider.client.containers.run(img.id, entrypoint=["ls", "-l", path],
                                             remove=True).decode()
        assert path in out and "x" in out.split()[0], f"{name}: {out}"


@pytest.mark.docker
def test_an_unserved_version_fails_before_anything_starts() -> None:
    res = run_cli("up", "bench", "--cni", "calico@v3.99.0", "--name", f"tbt-badv-{RUN_ID}")
    assert res.returncode == 2 and "v3.31.0" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) <= 3
    bad = run_cli("up", "bench", "--cni", "flannel@latest", "--name", f"tbt-badv-{RUN_ID}")
    assert bad.returncode == 2 and "vMAJOR.MINOR.PATCH" in bad.stderr, bad.stderr


@pytest.mark.docker
def test_load_brings_images_from_a_docker_save_tarball(provider: DockerProvider,
                                                       built: dict[str, str],
                                                       tmp_path: Path) -> None:
    tag = f"tbt-load-{RUN_ID}/image:1"
    img = provider.client.images.get(built["base"])
    img.tag(tag)
    tarball = tmp_path / "image.tar"
    with tarball.open("wb") as fh:
        for chunk in provider.client.images.get(tag).save(named=True):
            fh.write(chunk)
    provider.client.images.remove(tag)
    try:
        res = run_cli("images", "load", str(tarball))
        assert res.returncode == 0, res.stderr
        assert tag in res.stderr
        assert provider.client.images.get(tag).id == img.id
    finally:
        provider.client.images.remove(tag, noprune=True)
    bad = run_cli("images", "load", str(tmp_path / "missing.tar"))
    assert bad.returncode == 2 and "is not a file" in bad.stderr
