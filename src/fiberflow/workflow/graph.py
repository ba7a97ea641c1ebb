"""One exposure's chain of jobs as a graphviz graph, from the production plan.

Snakemake's own ``--dag`` labels a node with the rule and only the wildcards its dependents do
not share, so the cameras of a night's DAG are unreadable; here every node names its step and
identifiers (camera, exposure or night) and is coloured by its state (``fiberflow status``).
"""

from __future__ import annotations

import os

#: node fill colour of each job state
STATE_COLOURS = {"done": "#c8e6c9", "stale": "#ffe0b2", "running": "#bbdefb", "interrupted": "#bbdefb",
                 "ready": "#eeeeee", "waiting": "#ffffff", "failed": "#ffcdd2"}


def _paths(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


def exposure_chain(plan, night, expid, camera=None):
    """The jobs of one exposure (optionally one camera, with its spectrograph's jobs) and every
    job upstream of them.

    Returns
    -------
    list of Job
        In plan order.
    """
    night, expid = int(night), int(expid)
    spectro = int(camera[1:]) if camera else None

    def seed(job):
        ids = job.ids
        if int(ids.get("expid", -1)) != expid or int(ids.get("night", night)) != night:
            return False
        if camera is None or "camera" in ids and ids["camera"] == camera:
            return True
        return "camera" not in ids and ids.get("spectrograph") is not None and int(ids["spectrograph"]) == spectro

    producer = {os.path.normpath(o): j for j in plan.jobs for o in j.outputs}
    chosen = {}
    todo = [j for j in plan.jobs if seed(j)]
    while todo:
        job = todo.pop()
        if id(job) in chosen:
            continue
        chosen[id(job)] = job
        for value in job.inputs.values():
            for p in _paths(value):
                up = producer.get(os.path.normpath(p))
                if up is not None and id(up) not in chosen:
                    todo.append(up)
    return [j for j in plan.jobs if id(j) in chosen]


def label(job):
    """A node's label: step, then its camera (or spectrograph) and exposure (or night)."""
    ids = job.ids
    parts = [job.step]
    if "camera" in ids:
        parts.append(str(ids["camera"]))
    elif "spectrograph" in ids:
        parts.append(f"spectrograph {ids['spectrograph']}")
    if "expid" in ids:
        parts.append(f"{int(ids['expid']):08d}")
    elif "night" in ids:
        parts.append(str(ids["night"]))
    return "\\n".join(parts)


def to_dot(jobs, title=""):
    """graphviz DOT text of some jobs: an edge per input they read from another of them (dashed
    when it only orders the job), a node colour per state."""
    index = {id(j): i for i, j in enumerate(jobs)}
    producer = {os.path.normpath(o): j for j in jobs for o in j.outputs}
    lines = ["digraph exposure {", f'  label="{title}"; labelloc=t; fontsize=14; fontname="sans-serif";',
             '  node [shape=box, style="rounded,filled", fontname="sans-serif", fontsize=11];',
             "  rankdir=TB;"]
    for j in jobs:
        colour = STATE_COLOURS.get(j.state or "waiting", "#ffffff")
        lines.append(f'  n{index[id(j)]} [label="{label(j)}", fillcolor="{colour}"];')
    edges = set()
    for j in jobs:
        for name, value in j.inputs.items():
            for p in _paths(value):
                up = producer.get(os.path.normpath(p))
                if up is None or up is j or (index[id(up)], index[id(j)]) in edges:
                    continue
                edges.add((index[id(up)], index[id(j)]))
                style = ' [style=dashed]' if name in j.ordering else ""
                lines.append(f"  n{index[id(up)]} -> n{index[id(j)]}{style};")
    lines.append("}")
    return "\n".join(lines) + "\n"
