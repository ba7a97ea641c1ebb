"""The workflow's own hygiene: `snakemake --lint` reports nothing, `snakefmt --check` passes,
and every rule has a log, a benchmark, resources and a `fiberflow` command."""

import os
import re
import shutil
import subprocess
import sys

import pytest
from _workflow import PROJECT

RULE_FILES = sorted(os.path.join(PROJECT, "rules", f) for f in os.listdir(os.path.join(PROJECT, "rules")))


@pytest.mark.parametrize("snakefile,extra", [("Snakefile", ""),
                                             ("Snakefile", "nights: [20250101]\nsimulate: {rule: true}\n"),
                                             ("Snakefile.quicklook", "")])
def test_snakemake_lint_reports_nothing(tmp_path, snakefile, extra):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"instrument: tiny\nraw: {tmp_path / 'raw'}\nredux: {tmp_path / 'redux'}\nspecprod: lint\n{extra}")
    res = subprocess.run([sys.executable, "-m", "snakemake", "-s", os.path.join(PROJECT, snakefile),
                          "--configfile", str(cfg), "--directory", str(tmp_path), "--lint"],
                         capture_output=True, text=True)
    text = res.stdout + res.stderr
    assert res.returncode == 0 and "Lints for" not in text, text[-3000:]
    assert "Congratulations, your workflow is in a good condition!" in text


def test_snakefmt_check_passes():
    exe = shutil.which("snakefmt") or os.path.join(os.path.dirname(sys.executable), "snakefmt")
    if not os.path.exists(exe):
        pytest.skip("snakefmt is not installed (pip install '.[test]')")
    res = subprocess.run([exe, "--check", os.path.join(PROJECT, "Snakefile"), os.path.join(PROJECT, "Snakefile.quicklook"),
                          os.path.join(PROJECT, "rules")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_rule_logs_benchmarks_declares_resources_and_calls_fiberflow():
    text = "".join(open(f).read() for f in RULE_FILES)
    blocks = re.split(r"^rule ", text, flags=re.M)[1:]
    assert len(blocks) >= 20
    for block in blocks:
        name = block.split(":", 1)[0]
        body = block.split("\n\n\n", 1)[0]
        if "output:" not in body and "shell:" not in body:
            assert name == "simulate", f"target rule {name} belongs in the Snakefile"
            continue
        for directive in ("log:", "benchmark:", "resources:", "mem_mb=", "runtime=", "conda:", "shell:"):
            assert directive in body, f"rule {name} lacks {directive}"
        assert re.search(r'shell:\s*\n\s*"\{?[^"]*fiberflow [a-z-]+', body), f"rule {name} does not call fiberflow"
