import functools
import threading

import pytest

from modelrepo.checksum import sha256_file
from modelrepo.layout import RepositoryError
from modelrepo.read import load_source, read_config
from modelrepo.schema import Instances, ModelSpec, Version, Weights
from modelrepo.write import write_config, write_version
from tests.service.conftest import RGB_LABELS, write_rgb

ENTRY = functools.partial(
    Version, precision="fp32", weights=Weights(source="random"), opset=17, exporter="test", exported_at="now"
)


def spec_of(folder) -> ModelSpec:
    """The model's config.json less its versions: what export writes a version with."""
    return ModelSpec(**read_config(folder).model_dump(exclude={"versions"}))


def test_versions_are_added_and_the_users_choices_kept(tmp_path):
    folder = write_rgb(tmp_path)
    config = read_config(folder)
    tuned = config.model_copy(update={"instances": Instances(count=2, intra_op_threads=1)})
    write_config(tmp_path, tuned)
    onnx_file = tmp_path / "new.onnx"
    onnx_file.write_bytes((folder / "1" / "model.onnx").read_bytes())
    written = write_version(tmp_path, spec_of(folder), onnx_file, RGB_LABELS, ENTRY)
    assert written == folder / "2" / "model.onnx"
    after = read_config(folder)
    assert sorted(after.versions) == [1, 2] and after.versions[2].sha256 == sha256_file(written)
    assert after.instances == Instances(count=2, intra_op_threads=1)  # kept across the export
    assert load_source(tmp_path, "tiny_rgb").version == 2
    assert sorted(p.name for p in folder.iterdir()) == ["1", "2", "config.json", "labels.txt"]  # nothing left over


def test_rewriting_a_version_replaces_it_whole_and_a_failed_write_leaves_nothing(tmp_path):
    folder = write_rgb(tmp_path, versions=(1, 2))
    spec = spec_of(folder)
    onnx_file = tmp_path / "v1.onnx"
    onnx_file.write_bytes((folder / "1" / "model.onnx").read_bytes())
    write_version(tmp_path, spec, onnx_file, RGB_LABELS, ENTRY, version=2)
    assert sha256_file(folder / "2" / "model.onnx") == sha256_file(onnx_file) == read_config(folder).versions[2].sha256
    before = (folder / "config.json").read_bytes()
    with pytest.raises(FileNotFoundError):
        write_version(tmp_path, spec, tmp_path / "missing.onnx", RGB_LABELS, ENTRY)
    assert (folder / "config.json").read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["1", "2", "config.json", "labels.txt"]
    with pytest.raises(RepositoryError, match="not a valid model name"):
        write_version(tmp_path, spec.model_copy(update={"name": "../escape"}), onnx_file, RGB_LABELS, ENTRY)


def test_a_reader_polling_during_writes_never_sees_a_broken_version(tmp_path):
    """Versions of 4 MB are written while a reader loads the latest in a loop: every read it makes after the
    first version exists must succeed (sha256 checked), at a version that only grows."""
    folder = write_rgb(tmp_path)
    spec = spec_of(folder)
    graph = (folder / "1" / "model.onnx").read_bytes()
    stop, seen, failures = threading.Event(), [], []

    def read() -> None:
        while not stop.is_set():
            try:
                seen.append(load_source(tmp_path, "tiny_rgb").version)
            except RepositoryError as e:
                failures.append(str(e))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for v in range(2, 12):
            onnx_file = tmp_path / f"{v}.onnx"
            onnx_file.write_bytes(graph + bytes(4 << 20))  # trailing bytes: a different, larger file
            write_version(tmp_path, spec, onnx_file, RGB_LABELS, ENTRY, version=v)
    finally:
        stop.set()
        reader.join()
    assert not failures, failures[:3]
    assert len(seen) > 10 and seen == sorted(seen) and len(set(seen)) > 2, sorted(set(seen))
    assert load_source(tmp_path, "tiny_rgb").version == 11
