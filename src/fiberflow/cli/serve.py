"""``fiberflow serve``: the live monitor of a production's night-time quick-look (pages and a
JSON API; :mod:`fiberflow.qa.webapp`).

It binds 127.0.0.1 unless ``--host`` says otherwise (reach it from elsewhere through an SSH
tunnel), serves only files under the production's ``quicklook/`` and ``qa/`` trees, and is
read-only except for two actions, rerun an exposure and stop the watcher, which need the token:
``--token``, else ``$FIBERFLOW_MONITOR_TOKEN``, else one made now and printed once.

    fiberflow serve --config prod.yaml [--port 8001]
    curl http://127.0.0.1:8001/api/latest
    curl -X POST -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8001/api/watcher/stop
"""

from __future__ import annotations

import os


def add_arguments(p, name):
    p.add_argument("--config", required=True, help="the production's configuration")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8001, help="port (default 8001; 0: any free one, printed)")
    p.add_argument("--token", default=None,
                   help="token of the state-changing actions (default $FIBERFLOW_MONITOR_TOKEN, else a new one)")
    p.add_argument("--threads", type=int, default=8, help="server threads")
    p.add_argument("--refresh", type=float, default=2.0, help="seconds between the pages' updates")


def run(args):
    import secrets

    from waitress.server import create_server

    from ..config import load_config, resolve_roots
    from ..qa.webapp import create_app
    from .qc import database_of

    cfg = load_config(args.config)
    prod = resolve_roots(cfg)["prod"]
    token = args.token or os.environ.get("FIBERFLOW_MONITOR_TOKEN") or secrets.token_urlsafe(24)
    app = create_app(prod, database_of(cfg, prod), token, refresh=args.refresh)
    server = create_server(app, host=args.host, port=args.port, threads=args.threads, ident="fiberflow-monitor")
    host, port = server.effective_host, server.effective_port
    print(f"fiberflow serve: monitor of {prod} on http://{host}:{port}/ (API: /api)", flush=True)
    if not (args.token or os.environ.get("FIBERFLOW_MONITOR_TOKEN")):
        print(f"fiberflow serve: token for rerun / stop: {token}", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0
