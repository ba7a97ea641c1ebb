"""``fiberflow exptable``: write or update a night's exposure table from the raw headers.

Operator edits of LASTSTEP, BADCAMWORD, BADAMPS and COMMENTS in an existing table are kept;
new raw exposures are added; the override file is applied on top.
"""

from __future__ import annotations


def add_arguments(p, name):
    p.add_argument("--config", default=None, help="workflow configuration (raw and production roots)")
    p.add_argument("--night", type=int, required=True)
    p.add_argument("-o", "--outfile", default=None, help="default: the production's exposure_table path")


def run(args):
    import os

    from .. import paths
    from ..config import load_config, resolve_roots
    from ..workflow import exptable

    cfg = load_config(args.config)
    roots = resolve_roots(cfg)
    out = args.outfile or paths.findfile("exposure_table", prod=roots["prod"], night=args.night)
    existing = exptable.read_table(out) if os.path.exists(out) else []
    rows = exptable.build_table(roots["raw"], args.night, existing)
    exptable.apply_override(rows, exptable.read_override(
        paths.findfile("exposure_override", prod=roots["prod"], night=args.night)))
    exptable.write_table(out, rows)
    counts = {}
    for r in rows:
        counts[r["OBSTYPE"]] = counts.get(r["OBSTYPE"], 0) + 1
    print(f"exposure table {args.night}: {len(rows)} exposure(s) "
          f"({', '.join(f'{n} {k}' for k, n in sorted(counts.items()))}) -> {out}")
    return 0
