"""Build hook: a wheel of fiberflow carries the workflow (Snakefile, Snakefile.quicklook, rules/, config/, profiles/,
envs/) inside the package as ``fiberflow/data/workflow/``, so that ``pip install .`` followed by
``fiberflow demo`` (or ``fiberflow workflow-dir``) finds it outside the source tree. An editable
install (``make setup``) uses the project tree itself. Everything else is in pyproject.toml."""

import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
WORKFLOW = ("Snakefile", "Snakefile.quicklook", "rules", "config", "profiles", "envs")


class BuildWithWorkflow(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        dest = os.path.join(self.build_lib, "fiberflow", "data", "workflow")
        if os.path.exists(dest):
            shutil.rmtree(dest)
        os.makedirs(dest)
        for name in WORKFLOW:
            src = os.path.join(HERE, name)
            if os.path.isdir(src):
                shutil.copytree(src, os.path.join(dest, name), ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            elif os.path.exists(src):
                shutil.copy2(src, os.path.join(dest, name))


setup(cmdclass={"build_py": BuildWithWorkflow})
