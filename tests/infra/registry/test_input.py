"""Registry input validated exactly, corrupt records repairable, bundles confined to themselves.

Every fault is injected for real on both backends (a directory and S3 over moto's HTTP server):
names with trailing newlines and non-ASCII digits, alias records rewritten behind the registry's
back, symlinks in a bundle, ONNX external data the manifest does not list, a pull racing a delete.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from functions.manifest import MANIFEST_FILE, MODEL_FILE, read_manifest
from infra.cli import main
from infra.registry import IntegrityError, NotInRegistry, RegistryError
from tests.infra.registry.test_faults import _overwrite

BAD_NAMES = ["m\n", "m\r\n", "\nm", "ｍ", "m١", "M", "m\x00", ""]
BAD_ALIASES = ["prod\n", "pro d", "١", "１２", "prod\u200b", "latest", "7", ""]
BAD_VERSIONS = ["١", "１", "1\n", " 1", "+1", "1_0", "0x1", "٣"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_model_names_are_matched_whole_and_ascii(registry, bundle, name):
    with pytest.raises(RegistryError, match="invalid model name"):
        registry.push(name, bundle("a"))


@pytest.mark.parametrize("alias", BAD_ALIASES)
def test_aliases_are_matched_whole_and_ascii(registry, bundle, alias):
    registry.push("m", bundle("a"))
    with pytest.raises(RegistryError, match="invalid alias"):
        registry.promote("m", alias, 1)


@pytest.mark.parametrize("ref", BAD_VERSIONS)
def test_version_refs_are_ascii_digits_only(registry, bundle, ref):
    registry.push("m", bundle("a"))
    with pytest.raises(RegistryError):
        registry.resolve("m", ref)
    assert registry.resolve("m", "1") == 1


@pytest.mark.parametrize("field,value", [("name", "minilm\n"), ("name", "ｍinilm"), ("alias", "prod\n")])
def test_models_yaml_names_and_aliases_are_matched_whole(field, value):
    from functions.errors import ConfigError
    from infra.spec import parse_model

    raw = {"name": "minilm", "source": "x", "task": "feature-extraction", field: value}
    with pytest.raises(ConfigError, match=field):
        parse_model(raw)


@pytest.mark.parametrize("version", ["١", "1_0", "+1", " 1"])
def test_cli_version_arguments_are_ascii_digits(registry_uri, bundle, capsys, version):
    uri, endpoint = registry_uri
    prefix = ["registry", "--registry", uri] + (["--endpoint-url", endpoint] if endpoint else [])
    assert main(prefix + ["push", "m", str(bundle("a"))]) == 0
    with pytest.raises(SystemExit) as exit_:
        main(prefix + ["promote", "m", version])
    assert exit_.value.code == 2 and "invalid version" in capsys.readouterr().err


CORRUPT_ALIASES = [
    b"{not json", b"[]", b"null", b'{"version": 1, "history": [1]}', b'{"version": 1e400, "history": []}',
    b'{"version": true, "history": []}', b'{"version": 1, "history": [{"x": 1}]}', b'{"version": "1"}',
    b'{"version": -3, "history": []}', b"[" * 5000 + b"]" * 5000,
]


@pytest.mark.parametrize("record", CORRUPT_ALIASES, ids=range(len(CORRUPT_ALIASES)))
def test_a_corrupt_alias_is_one_clear_error_and_can_be_repaired(registry, bundle, record):
    registry.push("m", bundle("a"))
    registry.push("m", bundle("b"))
    registry.promote("m", "prod", 1)
    registry.promote("m", "canary", 2)
    _overwrite(registry, "models/m/aliases/prod.json", lambda _: record)

    # The other versions and aliases stay usable.
    assert [v.version for v in registry.list_versions("m")] == [1, 2]
    assert registry.show("m", 2).aliases == ("canary",)
    assert registry.resolve("m", "canary") == 2
    # The broken alias names itself and its repair.
    for call in (lambda: registry.resolve("m", "prod"), lambda: registry.history("m", "prod"),
                 lambda: registry.promote("m", "prod", 2), lambda: registry.rollback("m", "prod")):
        with pytest.raises(IntegrityError, match="alias 'prod' of model 'm' is corrupted") as err:
            call()
        assert "modelfn registry unalias m --alias prod" in str(err.value) and "--force" in str(err.value)
    # Repair: re-point it; the new history starts here, the old record is set aside.
    state = registry.promote("m", "prod", 2, force=True)
    assert state.version == 2 and [h.version for h in state.history] == [2]
    assert registry.resolve("m", "prod") == 2
    set_aside = [k for k in registry.store.keys("models/m/removed-aliases/")]
    assert len(set_aside) == 1 and registry.store.get(set_aside[0])[0] == record
    # force on a readable alias is an ordinary move that keeps the history.
    assert [h.version for h in registry.promote("m", "prod", 1, force=True).history] == [2, 1]


def test_unalias_removes_a_corrupt_alias(registry, bundle):
    registry.push("m", bundle("a"))
    registry.promote("m", "prod", 1)
    _overwrite(registry, "models/m/aliases/prod.json", lambda _: b"{")
    registry.unalias("m", "prod")
    with pytest.raises(NotInRegistry, match="no alias 'prod'"):
        registry.resolve("m", "prod")
    with pytest.raises(NotInRegistry):
        registry.unalias("m", "prod")
    assert registry.promote("m", "prod", 1).version == 1  # a fresh alias


def test_cli_repairs_a_corrupt_alias(registry_uri, registry, bundle, capsys):
    uri, endpoint = registry_uri
    prefix = ["registry", "--registry", uri] + (["--endpoint-url", endpoint] if endpoint else [])
    assert main(prefix + ["push", "m", str(bundle("a"))]) == 0
    assert main(prefix + ["promote", "m", "1"]) == 0
    _overwrite(registry, "models/m/aliases/prod.json", lambda _: b'{"version": 1, "history": [1]}')
    capsys.readouterr()
    for args in (["show", "m", "prod"], ["promote", "m", "1"], ["pull", "m", "prod", "out"]):
        code = main(prefix + args)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 1 and len(err) == 1 and "alias 'prod' of model 'm' is corrupted" in err[0], err
    assert main(prefix + ["show", "m", "1"]) == 0  # the version itself is fine
    assert main(prefix + ["promote", "m", "1", "--force"]) == 0
    assert main(prefix + ["unalias", "m", "--alias", "prod"]) == 0
    assert "alias prod removed" in capsys.readouterr().out
    assert main(prefix + ["show", "m", "prod"]) == 2


@pytest.mark.parametrize("record", [b"{", b"[]", b'{"name": 1}', b'{"files": 5}', b"null"])
def test_a_corrupt_manifest_is_one_clear_line_in_show_pull_and_verify(registry_uri, registry, bundle, capsys,
                                                                       tmp_path, record):
    uri, endpoint = registry_uri
    prefix = ["registry", "--registry", uri] + (["--endpoint-url", endpoint] if endpoint else [])
    registry.push("m", bundle("a"))
    _overwrite(registry, "models/m/versions/1/manifest.json", lambda _: record)
    capsys.readouterr()
    for args in (["show", "m", "1"], ["pull", "m", "1", str(tmp_path / "out")], ["list", "m"]):
        code = main(prefix + args)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 1 and len(err) == 1 and "model 'm' version 1" in err[0] and "manifest" in err[0], err
    assert main(prefix + ["verify", "m"]) == 1
    out, err = capsys.readouterr()
    assert "CORRUPT" in out and "Traceback" not in out + err


def test_push_refuses_symlinks(registry, bundle, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("aws_secret_access_key=...")
    linked_file = bundle("a")
    (linked_file / "extra" / "labels.txt").unlink()
    (linked_file / "extra" / "labels.txt").symlink_to(secret)
    with pytest.raises(RegistryError, match="symlink"):
        registry.push("m", linked_file)

    linked_dir = bundle("b")
    real = tmp_path / "elsewhere"
    (linked_dir / "extra").rename(real)
    (linked_dir / "extra").symlink_to(real, target_is_directory=True)
    with pytest.raises(RegistryError, match="symlink"):
        registry.push("m", linked_dir)

    linked_manifest = bundle("c")
    moved = tmp_path / "manifest-copy.json"
    (linked_manifest / MANIFEST_FILE).rename(moved)
    (linked_manifest / MANIFEST_FILE).symlink_to(moved)
    with pytest.raises(RegistryError, match="symlink"):
        registry.push("m", linked_manifest)
    assert registry.list_models() == []


def _onnx_bundle(root, *, list_external: bool, location: str = "weights.bin"):
    """A real ONNX model whose one initializer lives in an external data file."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from tests.infra.registry.conftest import make_bundle

    make_bundle(root, "x")
    weight = numpy_helper.from_array(np.arange(1024, dtype=np.float32), "w")
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1024])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1024])], [weight])
    model = helper.make_model(graph)
    onnx.save_model(model, str(root / MODEL_FILE), save_as_external_data=True, location="weights.bin",
                    size_threshold=0)
    if location != "weights.bin":  # onnx refuses to write such a path; a hand-edited file can hold one
        stored = onnx.load(str(root / MODEL_FILE), load_external_data=False)
        for entry in stored.graph.initializer[0].external_data:
            if entry.key == "location":
                entry.value = location
        (root / MODEL_FILE).write_bytes(stored.SerializeToString())
    from functions.manifest import describe_files

    manifest = read_manifest(root)
    names = [MODEL_FILE, "tokenizer.json"] + (["weights.bin"] if list_external else [])
    data = json.loads((root / MANIFEST_FILE).read_text())
    data["files"] = {n: {"sha256": e.sha256, "size": e.size} for n, e in describe_files(root, names).items()}
    (root / MANIFEST_FILE).write_text(json.dumps(data))
    assert manifest.name == "fake"
    return root


def test_push_and_verify_refuse_external_data_the_manifest_does_not_list(registry, tmp_path):
    with pytest.raises(RegistryError, match="weights.bin' that the manifest does not list"):
        registry.push("m", _onnx_bundle(tmp_path / "unlisted", list_external=False))
    with pytest.raises(RegistryError, match="outside the bundle"):
        registry.push("m", _onnx_bundle(tmp_path / "outside", list_external=False, location="../weights.bin"))
    assert registry.push("m", _onnx_bundle(tmp_path / "listed", list_external=True)).version == 1
    assert registry.verify("m")[0].ok

    # A version an older client stored without the check: every sha256 matches, verify still fails it.
    unlisted = _onnx_bundle(tmp_path / "old-client", list_external=False)
    for file_name in [*read_manifest(unlisted).files, MANIFEST_FILE]:
        registry.store.put_file_new(f"models/m/versions/2/{file_name}", unlisted / file_name)
    results = registry.verify("m")
    assert [(r.version, r.ok) for r in results] == [(1, True), (2, False)]
    assert "weights.bin' that the manifest does not list" in results[1].problem


def test_a_pull_racing_a_delete_is_not_found(s3_bucket, moto_endpoint, bundle, tmp_path):
    """The delete lands between the manifest read and the file downloads."""
    from functions.fetch import make_s3_client
    from infra.registry import open_registry

    uri = f"s3://{s3_bucket}/reg"
    open_registry(uri, endpoint_url=moto_endpoint).push("m", bundle("a"))

    class DeletingClient:
        def __init__(self, inner):
            self.inner, self.fired = inner, False

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def download_file(self, *args, **kwargs):
            if not self.fired:
                self.fired = True
                open_registry(uri, endpoint_url=moto_endpoint).delete("m", 1)
            return self.inner.download_file(*args, **kwargs)

    client = DeletingClient(make_s3_client(moto_endpoint))
    racing = open_registry(uri, endpoint_url=moto_endpoint, s3_client=client)
    with pytest.raises(NotInRegistry, match="version 1 was deleted while it was being read"):
        racing.pull("m", 1, tmp_path / "out")
    assert client.fired and not (tmp_path / "out").exists()
    assert [p for p in os.listdir(tmp_path) if p.startswith(".out")] == []  # no staging left
