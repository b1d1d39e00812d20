"""The content-addressed artifact store: keys, cache hits, retraining, one build under
concurrent workers, failed builds, and finding artifacts by a key's prefix."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import pytest

from pytest_sleepy import __version__
from pytest_sleepy.training.artifacts import (
    Artifact,
    ArtifactError,
    ArtifactStore,
    artifact_key,
    default_artifacts_dir,
    records_digest,
    training_material,
)


def material(seed: int = 0, **changes) -> dict:
    return {"base_model": "sha256:base", "records": "sha256:records:4", "hyperparameters": {"rank": 8},
            "seed": seed, "version": "1.0", **changes}


def counting_build(marker: Path, pause: float = 0.0):
    """A build that writes one file and appends a line to `marker` (so the test counts builds)."""
    def build(folder: Path) -> dict:
        with open(marker, "a") as out:
            out.write("built\n")
        time.sleep(pause)
        (folder / "adapter_model.safetensors").write_bytes(b"weights")
        (folder / "sub").mkdir()
        (folder / "sub" / "notes.txt").write_text("hello")
        return {"metrics": {"final_loss": 0.5}}
    return build


def builds(marker: Path) -> int:
    return len(marker.read_text().splitlines()) if marker.exists() else 0


def worker(root: str, marker: str, barrier) -> None:
    """Runs in a spawned process: wait for the other worker, then ask for the same key."""
    barrier.wait()
    ArtifactStore(root).get_or_create("lora", material(), counting_build(Path(marker), pause=0.5))


# -- keys ------------------------------------------------------------------------------

def test_a_key_is_the_sha256_of_the_canonical_material():
    one = artifact_key({"kind": "lora", **material()})
    assert len(one) == 64 and int(one, 16) >= 0
    assert artifact_key(dict(reversed(list({"kind": "lora", **material()}.items())))) == one


def test_anything_that_decides_the_contents_changes_the_key():
    key = artifact_key({"kind": "lora", **material()})
    for change in ({"seed": 1}, {"base_model": "sha256:other"}, {"records": "sha256:x:4"},
                   {"hyperparameters": {"rank": 16}}, {"version": "1.1"}, {"kind": "share"}):
        assert artifact_key({"kind": "lora", **material(), **change}) != key, change


def test_material_missing_a_required_key_is_refused():
    incomplete = material()
    del incomplete["records"]
    with pytest.raises(ArtifactError, match="artifact material lacks kind, records"):
        artifact_key(incomplete)


def test_material_must_be_plain_json():
    with pytest.raises(ArtifactError, match="plain JSON"):
        artifact_key({"kind": "lora", **material(base_model=Path("/models/x"))})


def test_the_records_digest_depends_on_every_record_and_their_order():
    records = [{"kind": "sft", "n": 1}, {"kind": "sft", "n": 2}]
    digest = records_digest(records)
    assert digest.endswith(":2")
    assert records_digest(list(reversed(records))) != digest
    assert records_digest([records[0], {"kind": "sft", "n": 3}]) != digest


def test_training_material_holds_the_required_keys_and_the_package_version():
    made = training_material("lora", base_model="sha256:b", base_name="tiny", records=[{"n": 1}],
                             hyperparameters={"rank": 8}, seed=3, strategy="lora-all")
    assert made["version"] == __version__ and made["seed"] == 3 and made["strategy"] == "lora-all"
    assert made["records"] == records_digest([{"n": 1}])
    artifact_key(made)  # complete


def test_the_default_root_is_the_environment_variable_or_dot_sleepy(monkeypatch, tmp_path):
    monkeypatch.delenv("SLEEPY_ARTIFACTS_DIR", raising=False)
    assert default_artifacts_dir(tmp_path) == tmp_path / ".sleepy" / "artifacts"
    monkeypatch.setenv("SLEEPY_ARTIFACTS_DIR", str(tmp_path / "elsewhere"))
    assert default_artifacts_dir(tmp_path) == tmp_path / "elsewhere"


# -- get_or_create ---------------------------------------------------------------------

def test_a_built_artifact_is_named_by_its_key_and_described_by_artifact_json(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    artifact = store.get_or_create("lora", material(), counting_build(tmp_path / "marker"), made_by="lora-all")
    key = artifact_key({"kind": "lora", **material()})
    assert artifact.path == tmp_path / "store" / key
    meta = json.loads((artifact.path / "artifact.json").read_text())
    assert meta == artifact.meta
    assert meta["kind"] == "lora" and meta["key"] == key and meta["made_by"] == "lora-all"
    assert meta["material"] == {"kind": "lora", **material()}
    assert meta["files"] == ["adapter_model.safetensors", "sub/notes.txt"] and meta["size"] == len("weights") + 5
    assert meta["metrics"] == {"final_loss": 0.5} and meta["created"].endswith("+00:00")


def test_a_cache_hit_does_not_rebuild(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    first = store.get_or_create("lora", material(), counting_build(tmp_path / "marker"))
    again = ArtifactStore(tmp_path / "store").get_or_create("lora", material(), counting_build(tmp_path / "marker"))
    assert builds(tmp_path / "marker") == 1
    assert again == first


def test_retrain_rebuilds_and_replaces_the_artifact(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    first = store.get_or_create("lora", material(), counting_build(tmp_path / "marker"))
    second = store.get_or_create("lora", material(), counting_build(tmp_path / "marker"), retrain=True)
    assert builds(tmp_path / "marker") == 2
    assert second.path == first.path and second.meta["build"] != first.meta["build"]
    assert [p.name for p in (tmp_path / "store").iterdir() if not p.name.endswith(".lock")] == [first.key]


def test_two_processes_asking_for_the_same_key_build_it_once(tmp_path):
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    marker = tmp_path / "marker"
    workers = [context.Process(target=worker, args=(str(tmp_path / "store"), str(marker), barrier)) for _ in range(2)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=60)
    assert [process.exitcode for process in workers] == [0, 0]
    assert builds(marker) == 1
    assert len(ArtifactStore(tmp_path / "store").list()) == 1


def test_a_failed_build_leaves_nothing_and_the_next_call_builds(tmp_path):
    store = ArtifactStore(tmp_path / "store")

    def broken(folder: Path) -> dict:
        (folder / "half.bin").write_bytes(b"half")
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        store.get_or_create("lora", material(), broken)
    assert [p.name for p in (tmp_path / "store").iterdir() if not p.name.endswith(".lock")] == []
    # The lock was released: this call would otherwise wait forever.
    artifact = store.get_or_create("lora", material(), counting_build(tmp_path / "marker"))
    assert builds(tmp_path / "marker") == 1 and (artifact.path / "artifact.json").is_file()


def test_a_build_must_not_overwrite_the_store_s_own_metadata(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    with pytest.raises(ArtifactError, match="returned key, which the store sets itself"):
        store.get_or_create("lora", material(), lambda folder: {"key": "mine"})
    assert store.list() == []


def test_the_kind_in_the_material_must_agree(tmp_path):
    with pytest.raises(ArtifactError, match="material says kind 'share'"):
        ArtifactStore(tmp_path).get_or_create("lora", material(kind="share"), counting_build(tmp_path / "m"))


# -- list, get, delete -----------------------------------------------------------------

def two_artifacts_sharing_a_first_digit(store: ArtifactStore, marker: Path) -> tuple[Artifact, Artifact]:
    by_digit: dict[str, Artifact] = {}
    for seed in range(40):
        artifact = store.get_or_create("lora", material(seed), counting_build(marker))
        if artifact.key[0] in by_digit:
            return by_digit[artifact.key[0]], artifact
        by_digit[artifact.key[0]] = artifact
    raise AssertionError("no two keys share a first digit")


def test_list_get_and_delete(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    assert store.list() == []
    one = store.get_or_create("lora", material(0), counting_build(tmp_path / "marker"), made_by="a")
    two = store.get_or_create("share", material(1), counting_build(tmp_path / "marker"), made_by="b")
    assert {a.key for a in store.list()} == {one.key, two.key}
    assert store.get(one.key[:12]) == one and store.get(two.key) == two
    assert store.delete(one.key[:12]) == one
    assert not one.path.exists()
    assert store.list() == [two]


def test_a_deleted_artifact_is_built_again_on_request(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    artifact = store.get_or_create("lora", material(), counting_build(tmp_path / "marker"))
    store.delete(artifact.key)
    store.get_or_create("lora", material(), counting_build(tmp_path / "marker"))
    assert builds(tmp_path / "marker") == 2


def test_an_ambiguous_prefix_is_an_error_naming_the_candidates(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    first, second = two_artifacts_sharing_a_first_digit(store, tmp_path / "marker")
    ambiguous = rf"artifact key '{first.key[0]}' is ambiguous: 2 artifacts start with it"
    with pytest.raises(ArtifactError, match=ambiguous) as error:
        store.get(first.key[0])
    assert first.key[:12] in str(error.value) and second.key[:12] in str(error.value)
    assert store.get(first.key[:12]) == first


def test_a_missing_key_is_an_error_naming_the_store(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    store.get_or_create("lora", material(), counting_build(tmp_path / "marker"))
    missing = "0123" if not store.list()[0].key.startswith("0123") else "4567"
    with pytest.raises(ArtifactError, match=rf"no artifact whose key starts with '{missing}' in .*store"):
        store.get(missing)
