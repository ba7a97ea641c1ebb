"""Static QA pages: production index, one page per night, one page per exposure.

Pages are plain HTML with inline CSS and relative links only, so the ``qa/`` tree (with the
production's logs beside it) works from the file system and on any web server.
"""

from __future__ import annotations

import html
import os

from .metrics import STEPS
from .plots import STATUS_COLORS

CSS = """
body{font-family:sans-serif;margin:1.2em;color:#222}
table{border-collapse:collapse;margin:0.6em 0}
td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px;text-align:left}
th{background:#f0f0f0}
.st{color:#fff;font-weight:bold;text-align:center}
.NORMAL{background:%(NORMAL)s}.WARNING{background:%(WARNING)s}.ALARM{background:%(ALARM)s}.NA{background:%(NA)s}
.cell a{color:#fff;font-size:11px;margin:0 2px}
.firstbad{border:2px solid %(ALARM)s;padding:0.5em;margin:0.8em 0;background:#fff4f4}
img{max-width:100%%;border:1px solid #ddd;margin:4px 0}
.small{font-size:12px;color:#555}
.blink img{max-width:none;object-fit:none;object-position:0 0;image-rendering:pixelated}
.blink button{margin:2px 4px 2px 0}
.AUTO,.CERTIFIED{background:%(NORMAL)s}.REVIEW{background:%(WARNING)s}.REJECTED{background:%(ALARM)s}
""" % STATUS_COLORS

#: blinking between the same-scale panels of a frame's strip (one PNG, one panel shown at a
#: time through object-position; every panel is loaded with the page, no server needed)
BLINK_JS = """
function ffShow(el,k){var d=el.closest('.blink');var names=d.dataset.names.split('|');
k=((k%names.length)+names.length)%names.length;d.dataset.k=k;
d.querySelector('img').style.objectPosition=(-k*parseInt(d.dataset.w,10))+'px 0';
d.querySelector('.shown').textContent=names[k];}
function ffBlink(el){var d=el.closest('.blink');if(d.ffTimer){clearInterval(d.ffTimer);d.ffTimer=null;
el.textContent='blink';return;}el.textContent='stop';
d.ffTimer=setInterval(function(){ffShow(el,parseInt(d.dataset.k||'0',10)+1);},parseInt(d.dataset.ms,10));}
"""


def blink_html(blink, src, camera, period_ms=600):
    """The blink widget of one frame: its strip (``blink`` record: PANELS, WIDTH, HEIGHT) shown
    one panel at a time, a button per panel and a blink toggle."""
    names = list(blink["PANELS"])
    w, h = int(blink["WIDTH"]), int(blink["HEIGHT"])
    buttons = "".join(f'<button type="button" onclick="ffShow(this,{k})">{esc(n)}</button>' for k, n in enumerate(names))
    if len(names) > 1:
        buttons += '<button type="button" class="toggle" onclick="ffBlink(this)">blink</button>'
    return (f'<div class="blink" data-w="{w}" data-k="0" data-ms="{period_ms}" data-names="{esc("|".join(names))}">'
            f'<p class="small">{esc(camera)}, same grey scale: {buttons} showing <b class="shown">{esc(names[0])}'
            f'</b></p><img src="{esc(src)}" width="{w}" height="{h}" style="width:{w}px;height:{h}px" '
            f'alt="{esc(camera)} blink: {esc(", ".join(names))}"></div>')


def esc(x):
    return html.escape("" if x is None else str(x))


def rel(target, page):
    """Relative link from the folder of ``page`` to ``target`` (both absolute paths)."""
    return os.path.relpath(target, os.path.dirname(os.path.abspath(page))).replace(os.sep, "/")


def page(title, body, crumbs=(), script=""):
    nav = " &rsaquo; ".join(f'<a href="{esc(h)}">{esc(t)}</a>' for t, h in crumbs)
    js = f"<script>{script}</script>" if script else ""
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
            f"<style>{CSS}</style>{js}</head><body>\n<p class=\"small\">{nav}</p>\n<h1>{esc(title)}</h1>\n{body}\n"
            "<p class=\"small\">fiberflow QA: NORMAL / WARNING / ALARM against config/qa.yaml; ESO score 1 = ALARM."
            "</p></body></html>\n")


def badge(status):
    return f'<span class="st {esc(status)}">&nbsp;{esc(status)}&nbsp;</span>'


def fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}:{fmt(x)}" for k, x in v.items())
    if isinstance(v, list):
        return ", ".join(fmt(x) for x in v)
    return esc(v)


def first_bad_html(fb, what="exposure", nwarning=0):
    if not fb:
        if nwarning:
            return (f"<p>No alarm; {nwarning} metric(s) of this {what} in WARNING, each named in "
                    f"<a href=\"#out-of-range\">out of range</a> below.</p>")
        return f"<p>No alarm: no step of this {what} is out of range.</p>"
    extra = ""
    if "EXPIDS" in fb:
        extra = " in exposure(s) " + ", ".join(str(e) for e in fb["EXPIDS"])
    elif fb.get("SOURCE"):
        extra = f" (from {esc(fb['SOURCE'])})"
    return (f'<div class="firstbad"><b>First bad step: {esc(fb["STEP"])}</b>{extra}; cameras '
            f'{esc(", ".join(fb["CAMERAS"]))}; metrics out of range: {esc(", ".join(fb["METRICS"]))}</div>')


def out_of_range(rec):
    """Every scored metric of a night record in WARNING or ALARM, alarms first, in step order.

    Returns
    -------
    list of dict
        EXPID, OBSTYPE, CAMERA, STEP, METRIC, VALUE, NORMAL, WARNING (ranges), STATUS.
    """
    out = []
    for e in rec["EXPOSURES"]:
        for cam, fr in e["FRAMES"].items():
            for step in STEPS:
                for name, sc in (fr.get("SCORES", {}).get(step) or {}).items():
                    if sc.get("STATUS") in ("WARNING", "ALARM"):
                        out.append({"EXPID": e["EXPID"], "OBSTYPE": e.get("OBSTYPE"), "CAMERA": cam, "STEP": step,
                                    "METRIC": name, "VALUE": sc.get("VALUE"), "NORMAL": sc.get("NORMAL"),
                                    "WARNING": sc.get("WARNING"), "STATUS": sc["STATUS"]})
    return sorted(out, key=lambda r: (r["STATUS"] != "ALARM", STEPS.index(r["STEP"]), r["EXPID"], r["CAMERA"]))


def root_causes_first(rec, items):
    """``items`` (:func:`out_of_range`) with the alarms of the metrics that make an exposure's
    first bad step (its root cause) ahead of the alarms they bring downstream, so that a short
    summary names every fault of the night before their consequences; otherwise in the same
    order. Also returns how many (step, metric) summary lines those root causes make."""
    roots = {(e["FIRST_BAD"]["STEP"], m) for e in rec["EXPOSURES"] if e.get("FIRST_BAD")
             for m in e["FIRST_BAD"].get("METRICS", [])}

    def is_root(r):
        return r["STATUS"] == "ALARM" and (r["STEP"], r["METRIC"]) in roots

    ordered = sorted(items, key=lambda r: (not is_root(r), r["STATUS"] != "ALARM"))
    return ordered, len({(r["STEP"], r["METRIC"]) for r in ordered if is_root(r)})


def out_of_range_summary(items):
    """One short line per (status, step, metric): cameras, exposures, values and the normal range."""
    groups = {}
    for r in items:
        groups.setdefault((r["STATUS"], r["STEP"], r["METRIC"]), []).append(r)
    lines = []
    for (status, step, metric), rows in groups.items():
        cams = sorted({r["CAMERA"] for r in rows})
        exps = sorted({r["EXPID"] for r in rows})
        vals = [r["VALUE"] for r in rows if isinstance(r["VALUE"], (int, float))]
        if vals:
            val = f"{min(vals):.4g}" if len(set(vals)) == 1 else f"{min(vals):.4g}..{max(vals):.4g}"
        else:
            val = "; ".join(fmt(r["VALUE"]) for r in rows[:2]) + ("; ..." if len(rows) > 2 else "")
        lines.append(f"{status} {step} {metric} {', '.join(cams)} (exp {', '.join(map(str, exps))}): {val} "
                     f"[normal {_span(rows[0]['NORMAL'])}]")
    return lines


def _span(rng):
    """A [low, high] range as 'low..high'."""
    if isinstance(rng, (list, tuple)) and len(rng) == 2:
        lo, hi = ("" if x is None else fmt(float(x)) for x in rng)  # an open end stays empty: "..4.5"
        return f"{lo}..{hi}"
    return fmt(rng)


def out_of_range_html(items):
    """Table naming every WARNING and ALARM of a night: exposure, camera, step, metric, value,
    ranges; '' when there is none."""
    if not items:
        return ""
    rows = [f'<tr class="flag"><td>{r["EXPID"]}</td><td>{esc(r["CAMERA"])}</td><td>{esc(r["STEP"])}</td>'
            f'<td>{esc(r["METRIC"])}</td><td>{fmt(r["VALUE"])}</td><td>{fmt(r["NORMAL"])}</td>'
            f'<td>{fmt(r["WARNING"])}</td><td class="st {esc(r["STATUS"])}">{esc(r["STATUS"])}</td></tr>'
            for r in items]
    return ('<h2 id="out-of-range">Out of range</h2><table class="outofrange"><tr><th>EXPID</th><th>camera</th>'
            '<th>step</th><th>metric</th><th>value</th><th>normal</th><th>warning</th><th>status</th></tr>'
            + "".join(rows) + "</table>")


def log_for(frame, prod):
    """The job log a night-grid cell links to: the log of the frame's first step with an
    alarm, else of its last step."""
    logs = frame.get("LOGS") or {}
    if not logs:
        return None
    bad = [s for s in STEPS if frame["STEP_STATUS"].get(s) == "ALARM" and s in logs]
    step = bad[0] if bad else [s for s in STEPS if s in logs][-1]
    return os.path.join(prod, logs[step])


def night_page(path, rec, prod, exposure_pages, plots, production_page):
    """Write the page of one night.

    Parameters
    ----------
    path : str
        Output HTML.
    rec : dict
        Night record (:func:`fiberflow.qa.tables.score_night`).
    prod : str
        Production root (frame QA files, plots and logs are relative to it).
    exposure_pages : dict expid -> absolute path of the exposure page
    plots : list of absolute PNG paths (night trends, histograms)
    production_page : str
        Absolute path of the production index.
    """
    cams = sorted({c for e in rec["EXPOSURES"] for c in e["FRAMES"]}, key=lambda c: (int(c[1:]), "brz".index(c[0])))
    petals = sorted({int(c[1:]) for c in cams})
    out = [f"<p>Night status {badge(rec['STATUS'])} &middot; {rec['NEXP']} exposures, {rec['NEXP_ALARM']} with alarms"
           f" &middot; {rec['NALARM']} of {rec['NSCORED']} scored metrics in alarm</p>"]
    flagged = out_of_range(rec)
    out.append(first_bad_html(rec.get("FIRST_BAD"), "night", sum(r["STATUS"] == "WARNING" for r in flagged)))
    head = "".join(f"<th>{esc(c)}</th>" for c in cams)
    out.append('<table><tr><th>EXPID</th><th>OBSTYPE</th><th>TILEID</th><th>EXPTIME</th><th>EFFTIME</th>'
               f'<th>status</th><th>first bad step</th>{head}</tr>')
    out.append("<tr><th colspan=7></th>" + "".join(
        f'<th colspan="{sum(int(c[1:]) == p for c in cams)}">petal {p}</th>' for p in petals) + "</tr>")
    for e in rec["EXPOSURES"]:
        link = rel(exposure_pages[e["EXPID"]], path)
        fb = e.get("FIRST_BAD")
        cells = []
        for c in cams:
            fr = e["FRAMES"].get(c)
            if fr is None:
                cells.append('<td class="st NA">-</td>')
                continue
            links = []
            if fr.get("PLOT"):
                links.append(f'<a href="{esc(rel(os.path.join(prod, fr["PLOT"]), path))}">plot</a>')
            if fr.get("QAFILE"):
                links.append(f'<a href="{esc(rel(os.path.join(prod, fr["QAFILE"]), path))}">json</a>')
            lg = log_for(fr, prod)
            if lg:
                links.append(f'<a href="{esc(rel(lg, path))}">log</a>')
            cells.append(f'<td class="st cell {esc(fr["STATUS"])}" title="{esc(c)} {esc(fr["STATUS"])}">'
                         f'{esc(fr["STATUS"][0])}<br>{"".join(links)}</td>')
        eff = "" if e.get("EFFTIME") is None else f"{e['EFFTIME']:.0f}"
        out.append(f'<tr><td><a href="{esc(link)}">{e["EXPID"]}</a></td><td>{esc(e["OBSTYPE"])}</td>'
                   f'<td>{esc(e.get("TILEID"))}</td><td>{esc(e.get("EXPTIME"))}</td><td>{eff}</td>'
                   f'<td class="st {esc(e["STATUS"])}">{esc(e["STATUS"])}</td>'
                   f'<td>{esc(fb["STEP"] + " (" + ", ".join(fb["CAMERAS"]) + ")") if fb else ""}</td>{"".join(cells)}</tr>')
    out.append("</table>")
    out.append(out_of_range_html(flagged))
    out.append(certification_html(rec.get("CERTIFICATION") or []))
    for p in plots:
        out.append(f'<p><img src="{esc(rel(p, path))}" alt="{esc(os.path.basename(p))}"></p>')
    crumbs = [("production", rel(production_page, path))]
    write_page(path, page(f"Night {rec['NIGHT']}", "\n".join(out), crumbs))


def certification_html(decisions):
    """Table of the night's calibrations and their certification states (AUTO, REVIEW,
    REJECTED, CERTIFIED), who decided and why."""
    if not decisions:
        return ""
    rows = [f'<tr><td>{esc(d["CALIBRATION"])}-{esc(d["CAMERA"])}</td><td class="st {esc(d["STATUS"])}">'
            f'{esc(d["STATUS"])}</td><td>{_use(d)}'
            f'</td><td>{esc(d.get("SOURCE", ""))}</td><td>{esc(d.get("REASON", ""))}</td></tr>'
            for d in sorted(decisions, key=lambda d: (list(CERT_ORDER).index(d["CALIBRATION"])
                                                       if d["CALIBRATION"] in CERT_ORDER else 9, d["CAMERA"]))]
    return ('<h2>Nightly calibrations</h2><table class="certification"><tr><th>calibration</th><th>state</th>'
            '<th>science</th><th>decided by</th><th>reason</th></tr>' + "".join(rows) + "</table>")


CERT_ORDER = ("biasnight", "psfnight", "fiberflatnight")


def _use(decision):
    """What the night's science did with a calibration of this certification."""
    if decision.get("USABLE", True):
        return "used"
    if decision["CALIBRATION"] == "biasnight":
        return "not used: an earlier night&#39;s instead, else overscan only"
    return "not used: an earlier night&#39;s instead"


def petal_qa_html(petal_qa):
    """Table of the petal-level QA bits (QAFIBERSTATUS) of an exposure and why each is set."""
    if not petal_qa:
        return ""
    rows = []
    for p in sorted(petal_qa, key=int):
        q = petal_qa[p]
        why = "; ".join(f"{b}: {', '.join(w)}" for b, w in q["WHY"].items())
        cls = "ALARM" if q["QAFIBERSTATUS"] else "NORMAL"
        rows.append(f'<tr><td>petal {esc(p)}</td><td class="st {cls}">{q["QAFIBERSTATUS"]}</td>'
                    f'<td>{esc(" | ".join(q["BITS"]) or "-")}</td><td>{esc(why)}</td></tr>')
    return ('<table class="petalqa"><tr><th>petal</th><th>QAFIBERSTATUS</th><th>bits</th><th>set by</th></tr>'
            + "".join(rows) + "</table>")


def exposure_page(path, rec, exp, prod, focal_plane, night_page_path, production_page):
    """Write the page of one exposure: status, first bad step, focal-plane maps, and per
    camera its coversheet, links (QA JSON, products, logs) and the table of scored metrics."""
    out = [f"<p>{esc(exp['OBSTYPE'])} exposure of night {rec['NIGHT']}, tile {esc(exp.get('TILEID'))}, "
           f"EXPTIME {esc(exp.get('EXPTIME'))} s, airmass {esc(exp.get('AIRMASS'))}"
           + (f", EFFTIME {exp['EFFTIME']:.0f} s" if exp.get("EFFTIME") is not None else "")
           + f" &middot; status {badge(exp['STATUS'])}</p>",
           first_bad_html(exp.get("FIRST_BAD"))]
    if exp.get("FIRST_WARNING") and not exp.get("FIRST_BAD"):
        fw = exp["FIRST_WARNING"]
        out.append(f"<p>First step with a warning: {esc(fw['STEP'])} ({esc(', '.join(fw['CAMERAS']))}: "
                   f"{esc(', '.join(fw['METRICS']))})</p>")
    out.append(petal_qa_html(exp.get("PETAL_QA")))
    out.append(f'<p><img src="{esc(rel(focal_plane, path))}" alt="focal plane"></p>')
    for cam, fr in sorted(exp["FRAMES"].items()):
        out.append(f'<h2 id="{esc(cam)}">{esc(cam)} {badge(fr["STATUS"])}</h2>')
        links = []
        if fr.get("QAFILE"):
            links.append(f'<a href="{esc(rel(os.path.join(prod, fr["QAFILE"]), path))}">metrics JSON</a>')
        for step in STEPS:
            if step in (fr.get("LOGS") or {}):
                links.append(f'<a href="{esc(rel(os.path.join(prod, fr["LOGS"][step]), path))}">{step.lower()} log</a>')
        out.append("<p class=\"small\">" + " &middot; ".join(links) + "</p>")
        if fr.get("PLOT"):
            out.append(f'<p><img src="{esc(rel(os.path.join(prod, fr["PLOT"]), path))}" alt="{esc(cam)} coversheet"></p>')
        if fr.get("BLINK"):
            out.append(blink_html(fr["BLINK"], rel(os.path.join(prod, fr["BLINK"]["FILE"]), path), cam))
        out.append("<table><tr><th>step</th><th>metric</th><th>value</th><th>normal</th><th>warning</th>"
                   "<th>source</th><th>status</th></tr>")
        for step in STEPS:
            for name, sc in (fr["SCORES"].get(step) or {}).items():
                worst_ = f" (worst: {', '.join(map(str, sc['WORST']))})" if sc.get("WORST") else ""
                out.append(f"<tr><td>{step}</td><td>{esc(name)}</td><td>{fmt(sc['VALUE'])}{esc(worst_)}</td>"
                           f"<td>{fmt(sc['NORMAL'])}</td><td>{fmt(sc['WARNING'])}</td><td>{esc(sc['SOURCE'])}</td>"
                           f'<td class="st {esc(sc["STATUS"])}">{esc(sc["STATUS"])}</td></tr>')
        out.append("</table>")
    crumbs = [("production", rel(production_page, path)), (f"night {rec['NIGHT']}", rel(night_page_path, path))]
    write_page(path, page(f"Exposure {exp['EXPID']}", "\n".join(out), crumbs, BLINK_JS))


def production_page(path, records, night_pages, plots, table, tile_pages=None, health=None):
    """Write the production index: one row per night with its status and first bad step (and
    its night QA report of tiles, ``tile_pages``: night -> nightqa page), trend plots and the
    production table."""
    tile_pages = tile_pages or {}
    out = ['<table><tr><th>night</th><th>status</th><th>exposures</th><th>with alarms</th>'
           '<th>metrics in alarm</th><th>first bad step</th><th>out of range (step, metric, cameras, value)</th>'
           '<th>tiles</th></tr>']
    for rec in sorted(records, key=lambda r: r["NIGHT"], reverse=True):
        fb = rec.get("FIRST_BAD")
        fbs = f"{fb['STEP']} (exp {', '.join(map(str, fb['EXPIDS']))})" if fb else ""
        items, nroot = root_causes_first(rec, out_of_range(rec))
        why = out_of_range_summary(items)
        show = max(5, nroot)  # every root cause, then downstream alarms up to 5 lines
        whys = "<br>".join(esc(w) for w in why[:show]) + (f"<br>... {len(why) - show} more on the night page"
                                                            if len(why) > show else "")
        out.append(f'<tr><td><a href="{esc(rel(night_pages[rec["NIGHT"]], path))}">{rec["NIGHT"]}</a></td>'
                   f'<td class="st {esc(rec["STATUS"])}">{esc(rec["STATUS"])}</td><td>{rec["NEXP"]}</td>'
                   f'<td>{rec["NEXP_ALARM"]}</td><td>{rec["NALARM"]} / {rec["NSCORED"]}</td><td>{esc(fbs)}</td>'
                   f'<td class="small">{whys}</td>'
                   + (f'<td><a href="{esc(rel(tile_pages[rec["NIGHT"]], path))}">night QA of tiles</a></td>'
                      if rec["NIGHT"] in tile_pages else "<td></td>") + '</tr>')
    out.append("</table>")
    out.append(f'<p>Production table (one row per frame, <code>pandas.read_csv</code>): '
               f'<a href="{esc(rel(table, path))}">{esc(os.path.basename(table))}</a></p>')
    if health:
        out.append(f'<p>Health check of the last night against the QC1 database, with the trend of every parameter: '
                   f'<a href="{esc(rel(health, path))}">health</a></p>')
    for p in plots:
        out.append(f'<p><img src="{esc(rel(p, path))}" alt="{esc(os.path.basename(p))}"></p>')
    write_page(path, page("fiberflow production QA", "\n".join(out)))


def write_page(path, text):
    from ..io.fitsutil import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        fh.write(text)


def nightqa_page(path, rec, tiles, night_page_path, exposure_pages, production_page_path):
    """Write the night QA report (DESI's ``nightqa-{night}.html``): every tile QA of the night with
    its picture, scores and exposures, then the exposures with their statuses.

    Parameters
    ----------
    path : str
    rec : dict
        Night record (:func:`fiberflow.qa.tables.score_night`).
    tiles : list of dict
        Per tile QA: TILEID, LASTNIGHT, STATUS, EFFTIME, GOALTIME, METRICS (list of (name,
        value, status, detail)), PNG and FITS (absolute paths).
    night_page_path, production_page_path : str
    exposure_pages : dict expid -> absolute path
    """
    exps = {}
    for e in rec["EXPOSURES"]:
        if e.get("TILEID") not in (None, "", -1):
            exps.setdefault(int(e["TILEID"]), []).append(e)
    out = [f"<p>Night status {badge(rec['STATUS'])} &middot; {len(tiles)} tile(s) with tile QA &middot; "
           f'<a href="{esc(rel(night_page_path, path))}">cameras of every exposure</a> (frame QA pages, plots, logs)</p>']
    names = []
    for t in tiles:
        names += [m[0] for m in t["METRICS"] if m[0] not in names]
    head = "".join(f"<th>{esc(n)}</th>" for n in names)
    out.append(f"<table><tr><th>tile</th><th>status</th><th>EFFTIME / goal [s]</th>{head}<th>exposures</th>"
               "<th>files</th></tr>")
    for t in tiles:
        mets = {m[0]: m for m in t["METRICS"]}
        cells = "".join(
            (f'<td class="st {esc(mets[n][2])}" title="{esc(mets[n][3])}">{fmt(mets[n][1])}</td>' if n in mets
             else "<td></td>") for n in names)
        el = ", ".join(f'<a href="{esc(rel(exposure_pages[e["EXPID"]], path))}">{e["EXPID"]}</a> {badge(e["STATUS"])}'
                       for e in exps.get(int(t["TILEID"]), []) if e["EXPID"] in exposure_pages)
        eff = f"{t['EFFTIME']:.0f} / {t['GOALTIME']:.0f}" if t.get("EFFTIME", -1) >= 0 else f"? / {t['GOALTIME']:.0f}"
        out.append(f'<tr><td><a href="#tile{t["TILEID"]}">{t["TILEID"]}</a> thru {t["LASTNIGHT"]}</td>'
                   f'<td class="st {esc(t["STATUS"])}">{esc(t["STATUS"])}</td><td>{eff}</td>{cells}<td>{el}</td>'
                   f'<td><a href="{esc(rel(t["PNG"], path))}">png</a> <a href="{esc(rel(t["FITS"], path))}">fits</a></td>'
                   "</tr>")
    out.append("</table>")
    for t in tiles:
        bad = [f"{m[0]} {m[2]} ({fmt(m[1])}{': ' + m[3] if m[3] else ''})" for m in t["METRICS"]
               if m[2] in ("WARNING", "ALARM")]
        out.append(f'<h2 id="tile{t["TILEID"]}">Tile {t["TILEID"]} {badge(t["STATUS"])}</h2>'
                   + (f'<p class="small">{esc("; ".join(bad))}</p>' if bad else "")
                   + f'<p><img src="{esc(rel(t["PNG"], path))}" alt="tile QA {t["TILEID"]}"></p>')
    out.append("<h2>Exposures</h2><table><tr><th>EXPID</th><th>OBSTYPE</th><th>TILEID</th><th>status</th>"
               "<th>first bad step</th></tr>")
    for e in rec["EXPOSURES"]:
        fb = e.get("FIRST_BAD")
        link = exposure_pages.get(e["EXPID"])
        eid = f'<a href="{esc(rel(link, path))}">{e["EXPID"]}</a>' if link else str(e["EXPID"])
        out.append(f'<tr><td>{eid}</td><td>{esc(e["OBSTYPE"])}</td><td>{esc(e.get("TILEID"))}</td>'
                   f'<td class="st {esc(e["STATUS"])}">{esc(e["STATUS"])}</td>'
                   f'<td>{esc(fb["STEP"] + " (" + ", ".join(fb["CAMERAS"]) + ")") if fb else ""}</td></tr>')
    out.append("</table>")
    crumbs = [("production", rel(production_page_path, path)), (f"night {rec['NIGHT']}", rel(night_page_path, path))]
    write_page(path, page(f"Night QA {rec['NIGHT']}: tiles", "\n".join(out), crumbs))


def health_page(path, rows, night, plots, settings, production_page_path=None):
    """Write the health-check page: every QC1 parameter of ``night`` against its history, the
    worst first, each with its trend plot (``plots``: (step, metric) -> PNG path)."""
    counts = {}
    for r in rows:
        counts[r["STATUS"]] = counts.get(r["STATUS"], 0) + 1

    def num(v):
        return "" if v is None else f"{v:.4g}"

    out = [f"<p>Night {night}: {len(rows)} parameters &middot; "
           + " &middot; ".join(f"{badge(k)} {counts[k]}" for k in ("ALARM", "WARNING", "NORMAL", "NA") if k in counts)
           + "</p>",
           f'<p class="small">History: {esc(settings)}</p>',
           "<table><tr><th>status</th><th>step</th><th>metric</th><th>camera</th><th>night value (median)</th>"
           "<th>worst</th><th>pull</th><th>history median</th><th>robust sigma</th><th>values / nights</th>"
           "<th>normal</th><th>trend</th></tr>"]
    for r in rows:
        png = plots.get((r["STEP"], r["METRIC"]))
        link = f'<a href="{esc(rel(png, path))}">trend</a>' if png else ""
        out.append(f'<tr><td class="st {esc(r["STATUS"])}">{esc(r["STATUS"])}</td><td>{esc(r["STEP"])}</td>'
                   f'<td>{esc(r["METRIC"])}</td><td>{esc(r["CAMERA"] or "-")}</td><td>{num(r["VALUE"])}</td>'
                   f'<td>{num(r["WORST_VALUE"])}</td><td>{num(r["PULL"])}</td><td>{num(r["HIST_MEDIAN"])}</td>'
                   f'<td>{num(r["HIST_SIGMA"])}</td><td>{r["HIST_N"]} / {r["HIST_NIGHTS"]}</td>'
                   f'<td>{num(r["NORMAL_LO"])} .. {num(r["NORMAL_HI"])}</td><td>{link}</td></tr>')
    out.append("</table>")
    for (step, metric), png in sorted(plots.items()):
        out.append(f'<h3 id="{esc(step)}-{esc(metric)}">{esc(step)} {esc(metric)}</h3>'
                   f'<p><img src="{esc(rel(png, path))}" alt="{esc(step)} {esc(metric)} trend"></p>')
    crumbs = [("production", rel(production_page_path, path))] if production_page_path else []
    write_page(path, page(f"Health check, night {night}", "\n".join(out), crumbs))
