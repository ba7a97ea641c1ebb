"""The live monitor's web application (``fiberflow serve``): pages and a JSON API over
:class:`fiberflow.qa.monitor.Monitor`.

Framework: Flask (Pallets; mature, small, WSGI, its test client needs no network), served by
waitress (pure-Python production WSGI server with a thread pool: no compiler, the same on a
workstation and a login node). The pages are thin HTML shells; ``monitor.js`` fills them from the
JSON API and polls it every few seconds, so they follow the night without a reload. Nothing is
fetched from outside (no CDN): plots are SVG drawn by the script.

Security: read-only except two actions (rerun an exposure, stop the watcher) that need the
token given at start (``Authorization: Bearer TOKEN``); files are served only from the
production's ``quicklook/`` and ``qa/`` trees (no path traversal); the CLI binds 127.0.0.1 unless
told otherwise.
"""

from __future__ import annotations

import hmac
import html
import os

from .monitor import FAMILIES, Monitor, NotFound

#: folders under the production the monitor serves files from
SERVED = ("quicklook", "qa")
#: seconds between two polls of the pages
REFRESH_S = 2.0

PAGES = {"monitor": "Monitor", "nights": "Nights", "latest": "Latest exposure", "history": "History"}


def static_dir():
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "monitor")


def create_app(prod, database=None, token=None, refresh=REFRESH_S):
    """The Flask application of a production's monitor.

    Parameters
    ----------
    prod : str
        Production root.
    database : str, optional
        QC1 database (history plots).
    token : str, optional
        Token of the state-changing actions; None: they are all refused.
    """
    from flask import Flask, abort, jsonify, request, send_file

    mon = Monitor(prod, database)
    app = Flask("fiberflow.monitor", static_folder=static_dir(), static_url_path="/static")
    app.config["JSON_SORT_KEYS"] = False

    def page(kind, title, **data):
        attrs = " ".join(f'data-{k}="{html.escape(str(v))}"' for k, v in data.items())
        nav = " | ".join(f'<a href="/{"" if k == "monitor" else k}">{v}</a>' for k, v in PAGES.items())
        return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)} - fiberflow monitor"
                f"</title><link rel='stylesheet' href='/static/monitor.css'></head><body>"
                f"<nav>fiberflow monitor: {nav} <span id='clock'></span></nav>"
                f"<h1 id='title'>{html.escape(title)}</h1>"
                f"<main id='main' data-page='{kind}' data-refresh='{refresh}' {attrs}>loading...</main>"
                f"<script src='/static/monitor.js'></script></body></html>")

    def error(status, msg):
        resp = jsonify({"error": msg})
        resp.status_code = status
        return resp

    @app.errorhandler(NotFound)
    def _not_found(exc):
        return error(404, str(exc))

    @app.after_request
    def _headers(resp):
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Cache-Control"] = "no-store"
        return resp

    # ---- pages ------------------------------------------------------------------------------
    @app.get("/")
    def monitor_page():
        return page("monitor", "Monitor")

    @app.get("/nights")
    def nights_page():
        return page("nights", "Nights")

    @app.get("/night/<int:night>")
    def night_page(night):
        return page("night", f"Night {night}", night=night)

    @app.get("/latest")
    def latest_page():
        return page("exposure", "Latest exposure", latest=1)

    @app.get("/exposure/<int:night>/<int:expid>")
    def exposure_page(night, expid):
        return page("exposure", f"Exposure {expid} (night {night})", night=night, expid=expid)

    @app.get("/favicon.ico")
    def favicon():
        return "", 204

    @app.get("/history")
    def history_page():
        return page("history", "History")

    @app.get("/files/<path:relpath>")
    def files(relpath):
        from werkzeug.security import safe_join

        if relpath.split("/", 1)[0] not in SERVED:
            abort(404)
        path = safe_join(mon.prod, relpath)
        if path is None or not os.path.isfile(path):
            abort(404)
        real = os.path.realpath(path)
        if not any(real.startswith(os.path.realpath(os.path.join(mon.prod, d)) + os.sep) for d in SERVED):
            abort(404)  # a link out of the QA trees
        return send_file(real)

    # ---- API --------------------------------------------------------------------------------
    @app.get("/api")
    def api_index():
        return jsonify({"endpoints": [
            "/api/nights", "/api/nights/<night>/exposures", "/api/exposures/<night>/<expid>",
            "/api/exposures/<night>/<expid>/spectrum?camera=&fiber=&rebin=", "/api/latest", "/api/watcher",
            "/api/metrics", "/api/metrics/<metric>?camera=&step=&kind=&nights=",
            "POST /api/exposures/<night>/<expid>/rerun (token)", "POST /api/watcher/stop (token)"],
            "families": list(FAMILIES)})

    @app.get("/api/nights")
    def api_nights():
        return jsonify(mon.nights())

    @app.get("/api/nights/<int:night>/exposures")
    def api_exposures(night):
        return jsonify(mon.exposures(night))

    @app.get("/api/exposures/<int:night>/<int:expid>")
    def api_exposure(night, expid):
        return jsonify(mon.exposure(night, expid))

    @app.get("/api/exposures/<int:night>/<int:expid>/spectrum")
    def api_spectrum(night, expid):
        camera = request.args.get("camera", "")
        if not camera or len(camera) != 2 or camera[0] not in "brz" or not camera[1].isdigit():
            return error(400, "camera= (b0..z9) is required")
        try:
            fiber = int(request.args.get("fiber", ""))
            rebin = int(request.args.get("rebin", "4"))
        except ValueError:
            return error(400, "fiber= and rebin= are integers")
        return jsonify(mon.spectrum(night, expid, camera, fiber, rebin))

    @app.get("/api/latest")
    def api_latest():
        return jsonify(mon.latest())

    @app.get("/api/watcher")
    def api_watcher():
        return jsonify(mon.watcher())

    @app.get("/api/metrics")
    def api_metrics():
        return jsonify(mon.metrics_known())

    @app.get("/api/metrics/<metric>")
    def api_metric(metric):
        a = request.args
        nights = a.get("nights")
        return jsonify(mon.history(metric, camera=a.get("camera") or None, step=a.get("step") or None,
                                   kind=a.get("kind") or None, nights=int(nights) if nights else None))

    # ---- actions (token) ----------------------------------------------------------------------
    def authorized():
        if not token:
            return False
        given = request.headers.get("Authorization", "")
        if given.startswith("Bearer "):
            given = given[len("Bearer "):]
        else:
            given = request.headers.get("X-Fiberflow-Token", "")
        return bool(given) and hmac.compare_digest(given.encode(), token.encode())

    @app.post("/api/exposures/<int:night>/<int:expid>/rerun")
    def api_rerun(night, expid):
        if not authorized():
            return error(403, "a state change needs the monitor's token (Authorization: Bearer TOKEN)")
        mon.exposure(night, expid)  # 404 when unknown
        req = request_path(mon.root, "rerun", night, expid)
        os.makedirs(os.path.dirname(req), exist_ok=True)
        open(req, "w").close()
        return jsonify({"requested": "rerun", "night": night, "expid": expid,
                        "note": "the watcher reruns it at its next look"})

    @app.post("/api/watcher/stop")
    def api_stop():
        if not authorized():
            return error(403, "a state change needs the monitor's token (Authorization: Bearer TOKEN)")
        open(os.path.join(mon.root, "STOP"), "w").close()
        return jsonify({"requested": "stop", "note": "the watcher stops after the exposure it is processing"})

    return app


def request_path(root, action, night, expid):
    """``{prod}/quicklook/requests/{action}-{night}-{expid:08d}``: a request the watcher takes."""
    return os.path.join(root, "requests", f"{action}-{int(night)}-{int(expid):08d}")
