"""The optional compiled build: mypyc extension modules of the hot path, built from the .py files.

A plain install (`pip install -e .`) is pure Python; everything else is in pyproject.toml. With
`LA_COMPILE=1` the modules of `COMPILED` are compiled as well, next to their sources:

    LA_COMPILE=1 .venv/bin/python setup.py build_ext --inplace
    LA_COMPILE=1 .venv/bin/pip install --no-build-isolation -e .

(mypyc comes with mypy, of the `test` extra; `--no-build-isolation` builds with the installed
mypy, and needs setuptools>=68 and wheel installed.) Python imports a module's extension in
place of its .py file while the extension is there; deleting them gives the pure build back:

    find service -name '*.so' -delete; rm -f service/learning_account/compiled_sources.json

The .py files stay the source: rebuild after changing one of them (tests/unit/test_compiled.py
fails on extensions built from other sources). The unit tests on the compiled build:

    LA_COMPILE=1 .venv/bin/python setup.py build_ext --inplace
    LA_EXPECT_BUILD=compiled .venv/bin/python -m pytest -q tests/unit
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from setuptools import setup

COMPILED = [
    "service/learning_account/domain/events.py",
    "service/learning_account/domain/guards.py",
    "service/learning_account/domain/model.py",
    "service/learning_account/domain/numbers.py",
    "service/learning_account/domain/overlay.py",
    "service/learning_account/domain/rebuilding.py",
    "service/learning_account/domain/rules.py",
    "service/learning_account/domain/statement.py",
    "service/learning_account/domain/step.py",
    "service/learning_account/domain/unit_facts.py",
    "service/learning_account/adapters/state_codec.py",
    "service/learning_account/processing/commands.py",
    "service/learning_account/processing/outputs.py",
]
"""The modules compiled, chosen by profile: each takes instructions off Processor.process
(bench/profile_processor.py --timing under callgrind). Not domain/values.py: mypyc compiles only
the `TYPE_CHECKING` side of `immutable`, and gives the enumerations of a compiled module a filler
`__doc__`. Not wire/fast.py: its msgspec structs lose their `kw_only` when compiled."""


BUILT_FROM = Path("service/learning_account/compiled_sources.json")
"""Written after a build of the extensions: the sha256 of each source they were built from
(tests/unit/test_compiled.py fails on extensions built from other sources)."""


def ext_modules() -> list[object]:
    if os.environ.get("LA_COMPILE") != "1":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError as missing:
        raise SystemExit("LA_COMPILE=1 needs mypyc: install mypy (the `test` extra)") from missing
    # one shared library inside the package, so an editable install finds it like its modules
    return list(mypycify(COMPILED, group_name="learning_account.compiled", opt_level="3"))


def digests() -> dict[str, str]:
    return {path: hashlib.sha256(Path(path).read_bytes()).hexdigest() for path in COMPILED}


extensions = ext_modules()
sources = digests()
distribution = setup(ext_modules=extensions)
if extensions and distribution.have_run.get("build_ext"):
    BUILT_FROM.write_text(json.dumps(sources, indent=2) + "\n", encoding="utf-8")
