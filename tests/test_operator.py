"""The operator's first hour without a workflow run: configuration paths relative to the
configuration file, ``fiberflow config check``, Snakemake's records following a moved production.
(The workflow side of these findings runs in test_operations.py and the demo test.)"""

import json
import os
import subprocess
import sys

from fiberflow.config import load_config, relative_paths, resolve_roots
from fiberflow.workflow import records

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ff(*argv, cwd=None):
    return subprocess.run([sys.executable, "-m", "fiberflow.cli.main", *argv], capture_output=True, text=True, cwd=cwd)


def _production(root, raw="raw", nights=(20250101,)):
    """A configuration in root/prod with relative paths, and raw night folders with one exposure."""
    prod = root / "prod"
    prod.mkdir(parents=True)
    for night in nights:
        exp = prod / "raw" / str(night) / "00000001"
        exp.mkdir(parents=True)
        (exp / "desi-00000001.fits.fz").write_bytes(b"")
    cfg = prod / "prod.yaml"
    cfg.write_text(f"instrument: tiny\nraw: {raw}\nredux: redux\nspecprod: p\nnights: {list(nights)}\n"
                   f"calibration: {{default_psf: calib}}\nredshift: {{enabled: false}}\n")
    return cfg


def test_config_paths_are_relative_to_the_config_file(tmp_path, monkeypatch):
    cfgfile = _production(tmp_path)
    monkeypatch.chdir(tmp_path)  # not the config's folder
    cfg = load_config(str(cfgfile.relative_to(tmp_path)))
    roots = resolve_roots(cfg)
    assert roots["raw"] == str(tmp_path / "prod" / "raw") and roots["prod"] == str(tmp_path / "prod" / "redux" / "p")
    assert cfg["calibration"]["default_psf"] == str(tmp_path / "prod" / "calib")
    # what the rules hash is the configuration as written: a moved folder hashes the same
    back = relative_paths(cfg, str(tmp_path / "prod"))
    assert back["raw"] == "raw" and back["calibration"]["default_psf"] == "calib"
    from fiberflow.workflow.plan import Plan

    moved = tmp_path / "elsewhere"
    os.rename(tmp_path / "prod", moved)
    h1 = Plan(load_config(str(moved / "prod.yaml")), str(moved), configfile=str(moved / "prod.yaml"))
    assert h1.prod == str(moved / "redux" / "p")
    os.rename(moved, tmp_path / "prod")
    h0 = Plan(cfg, str(tmp_path / "prod"), configfile=str(cfgfile))
    assert h0.config_hash("sky") == h1.config_hash("sky") and h0.config_hash("psf") == h1.config_hash("psf")


def test_config_check_names_what_would_go_wrong(tmp_path):
    cfg = _production(tmp_path, raw="rwa")  # a misspelled raw folder
    res = _ff("config", "check", str(cfg))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert f"ERROR: raw: {tmp_path / 'prod' / 'rwa'} does not exist" in res.stdout, res.stdout
    assert "calibration.default_psf:" in res.stdout and "does not exist" in res.stdout
    # the workflow itself warns instead of planning a production of 0 nights in silence
    from fiberflow.workflow.plan import Plan

    plan = Plan(load_config(str(cfg)), str(tmp_path), configfile=str(cfg))
    assert plan.nights == [20250101] and any("rwa does not exist" in w for w in plan.warnings), plan.warnings
    # right folder, nominal PSFs written, but a configured night without exposures
    cfg.write_text(cfg.read_text().replace("raw: rwa", "raw: raw").replace("nights: [20250101]",
                                                                           "nights: [20250101, 20250102]"))
    res = _ff("calibinit", "--config", str(cfg))
    assert res.returncode == 0, res.stderr
    res = _ff("config", "check", str(cfg))
    lines = res.stdout.strip().splitlines()
    assert res.returncode == 1 and len(lines) == 2, res.stdout
    assert lines[0].startswith("WARNING: night 20250102: no exposure under")
    assert lines[1].startswith("WARNING: redux:") and "the first run creates it" in lines[1]
    (tmp_path / "prod" / "redux").mkdir()
    cfg.write_text(cfg.read_text().replace("nights: [20250101, 20250102]", "nights: [20250101]"))
    res = _ff("config", "check", str(cfg))
    assert res.returncode == 0 and res.stdout.startswith(f"{cfg}: OK"), res.stdout
    # shipped profiles: the site ones carry placeholders, the test one none
    res = _ff("config", "check", str(cfg), "--profile", os.path.join(PROJECT, "profiles", "nersc"))
    assert res.returncode == 1 and "slurm_account: '<desi>' is a placeholder" in res.stdout, res.stdout
    res = _ff("config", "check", str(cfg), "--profile", os.path.join(PROJECT, "profiles", "slurm"))
    assert "slurm_partition: '<partition>'" in res.stdout and "slurm_account: '<account>'" in res.stdout
    res = _ff("config", "check", str(cfg), "--profile", os.path.join(PROJECT, "profiles", "testslurm"))
    assert res.returncode == 0, res.stdout


def test_record_names_are_snakemakes(tmp_path):
    """The record file names fiberflow reads and writes are those of the installed Snakemake."""
    from snakemake.persistence.file import FilePersistence

    folder = tmp_path / "metadata"
    folder.mkdir()
    fp = FilePersistence.__new__(FilePersistence)
    fp._max_len = None
    for key in ("/a/b/cframe-b0-00000001.fits", "/p/" + "x" * 400 + "/sky-r1-00000002.fits"):
        assert records.encode_key(str(folder), key) == fp._record_path(str(folder), key)
        rel = os.path.relpath(records.encode_key(str(folder), key), folder)
        assert records.decode_key(rel) == key
    assert "@" in os.path.relpath(records.encode_key(str(folder), "/p/" + "x" * 400), folder)


def test_records_follow_a_move(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    meta = old / ".snakemake" / "metadata"
    meta.mkdir(parents=True)
    (old / ".snakemake" / "incomplete").mkdir()
    long = str(old / "redux" / ("d" * 300) / "frame-b0-00000001.fits")
    outs = [str(old / "redux" / "p" / "sky-b0-00000001.fits"), long]
    for out in outs:
        path = records.encode_key(str(meta), out)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as fh:
            json.dump({"record_format_version": 6, "input": [str(old / "raw" / "x.fits"), "/shared/raw/y.fits"],
                       "params": [repr(f"--config {old}/prod.yaml --log A={old}/logs/a.log"), "'abc'"],
                       "log": [str(old / "logs" / "a.log")]}, fh)
    incomplete = records.encode_key(str(old / ".snakemake" / "incomplete"), outs[0])
    with open(incomplete, "w") as fh:
        json.dump({"external_jobid": None}, fh)
    roots = {"workdir": str(old), "prod": str(old / "redux" / "p"), "raw": "/shared/raw", "config": str(old)}
    assert records.follow_move(str(old), roots) == 0  # first parse: the stamp only
    os.rename(old, new)
    roots_new = {k: v.replace(str(old), str(new)) for k, v in roots.items()}
    assert records.follow_move(str(new), roots_new) == 3
    keys = sorted(k for _p, k in records.iter_records(str(new)))
    assert keys == sorted(o.replace(str(old), str(new)) for o in outs)
    rec = records.read_metadata(str(new), outs[0].replace(str(old), str(new)))
    assert rec["input"] == [str(new / "raw" / "x.fits"), "/shared/raw/y.fits"]
    assert rec["params"][0] == repr(f"--config {new}/prod.yaml --log A={new}/logs/a.log") and rec["params"][1] == "'abc'"
    assert [k for _p, k in records.iter_records(str(new), "incomplete")] == [outs[0].replace(str(old), str(new))]
    assert records.follow_move(str(new), roots_new) == 0  # nothing moved since
    # a path that only starts like the old root is not rewritten
    assert records._rewriter([(str(new), "/x")])[0](str(new) + "2/a") == str(new) + "2/a"
