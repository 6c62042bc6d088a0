"""`make bench` runs every benchmark script (issue 18.6): the Makefile's BENCH_SCRIPTS list is
exactly the scripts in bench/."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_make_bench_runs_every_bench_script():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    listed = re.search(r"^BENCH_SCRIPTS = (.*)$", makefile, re.M).group(1).split()
    assert "for script in $(BENCH_SCRIPTS)" in makefile
    on_disk = sorted(p.stem for p in (ROOT / "bench").glob("*.py") if not p.stem.startswith("_"))
    assert sorted(listed) == on_disk
