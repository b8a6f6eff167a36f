"""Build configuration beyond pyproject.toml: the optional C accelerator of the rules engine.

``pipeline/classify/_scan.c`` speeds up the keyword scan; when it cannot be compiled (no C
compiler, no Python headers) the install goes on without it and the engine uses the same scan
written in Python (``Classifier._scan``). Set ``TECH_MATIN_PURE_PYTHON=1`` to skip building it.
"""

import os

from setuptools import Extension, setup

ext_modules = []
if os.environ.get("TECH_MATIN_PURE_PYTHON", "") in ("", "0"):
    ext_modules.append(Extension("pipeline.classify._scan", ["pipeline/classify/_scan.c"], optional=True))

setup(ext_modules=ext_modules)
