"""The text/markdown sink (a document in, the same document out, published only on success) and the
recipe that regenerates the bundled notes with it (`recipes/notes-repair.yaml`)."""

from __future__ import annotations

import os

import pytest
import yaml

from llmlab.data.executor import run_recipe
from llmlab.data.io.sinks import open_sink, staged_path
from llmlab.data.ops.base import RecipeError
from llmlab.data.recipe import load_recipe, parse_recipe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = "# 标题\n\n正文第一行  \n第二行，末尾两个空格要保留  \n\n```python\n# 注释\n```"


def _recipe(tmp_path, out, **extra):
    data = {
        "project": "doc", "work_dir": str(tmp_path / "work"), "batch_size": 1, "tracer": False,
        "sources": [{"type": "text", "path": str(tmp_path / "in")}],
        "process": [{"fix_unicode": {}}],
        "sinks": [{"type": "markdown", "path": str(out)}],
    }  # fmt: skip
    data.update(extra)
    return parse_recipe(data)


def test_text_sink_writes_the_document_verbatim_and_joins_records(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.md").write_text(DOC, encoding="utf-8")
    out = tmp_path / "out" / "notes.md"
    run_recipe(_recipe(tmp_path, out), progress=False)
    assert out.read_text(encoding="utf-8") == DOC  # no trailing newline added, spaces kept
    assert not os.path.exists(staged_path(str(out)))
    # Several records: joined by the separator, in order, each written once.
    sink = open_sink({"type": "text", "path": str(tmp_path / "joined.txt"), "separator": "\n--\n"})
    sink.truncate(None)
    sink.write([{"text": "一"}, {"text": "二"}])
    sink.write([{"text": "三"}])
    sink.commit()
    sink.close()
    assert (tmp_path / "joined.txt").read_text(encoding="utf-8") == "一\n--\n二\n--\n三"


def test_failed_run_leaves_the_previous_document_untouched(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.md").write_text(DOC, encoding="utf-8")
    out = tmp_path / "notes.md"
    out.write_text("the last good output\n", encoding="utf-8")
    before = out.read_bytes()
    # The first record is staged, then an undecodable file fails the strict run.
    (tmp_path / "in" / "b.md").write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(RecipeError, match="strict mode: bad record"):
        run_recipe(_recipe(tmp_path, out, strict=True), progress=False)
    assert out.read_bytes() == before
    # A record without the sink's field fails the run too, instead of writing an empty document.
    (tmp_path / "in" / "b.md").unlink()
    bad_field = {"type": "markdown", "path": str(out), "field": "body"}
    with pytest.raises(RecipeError, match="text sink: record has no text field 'body'"):
        run_recipe(_recipe(tmp_path, out, sinks=[bad_field]), progress=False)
    assert out.read_bytes() == before
    # And a good run then replaces it as a whole.
    run_recipe(_recipe(tmp_path, out), progress=False)
    assert out.read_text(encoding="utf-8") == DOC


def test_notes_repair_recipe_regenerates_the_bundled_notes():
    recipe = load_recipe(os.path.join(ROOT, "recipes", "notes-repair.yaml"))
    ops = [name for name, _ in recipe.process]
    assert ops == ["repair_mojibake", "fix_unicode"]
    fix = recipe.build_ops()[1]
    assert (
        fix.map("机制是“全局并行”的核心") == "机制是“全局并行”的核心"
    )  # Chinese quotes stay curly
    assert dict(recipe.process)["repair_mojibake"] == {"lm": "gemma3-270m"}
    (sink,) = recipe.sinks
    assert sink["type"] == "markdown"
    # pkg:// resolves to the bundled file that `bundled:notes-zh.md` (the RAG default) names
    from llmlab.bundled import resolve_bundled
    from llmlab.rag.store import DEFAULT_NOTES

    assert os.path.samefile(sink["path"], resolve_bundled(DEFAULT_NOTES, "corpus", what="document"))
    assert recipe.build_ops()[0].lm == "gemma3-270m"


def test_repair_passes_must_be_positive(tmp_path):
    data = yaml.safe_load(open(os.path.join(ROOT, "recipes", "notes-repair.yaml")))
    data["process"][0] = {"repair_mojibake": {"lm": "gemma3-270m", "passes": 0}}
    with pytest.raises(RecipeError, match="passes must be a positive integer"):
        parse_recipe(data).build_ops()
