"""The local dashboard: a small HTTP server over the files caviar writes (a run's live.json and
state.json, a study's SQLite file), with the page and its script shipped in the package (it
works offline). Controls go through ``control.send``, the same mechanism as ``caviar control``.

Safety: it binds 127.0.0.1 unless told otherwise; another address needs ``allow_remote``. Every
control request must present the server's token (header ``X-Caviar-Token``, or the same-site
cookie the page is served with), come from the server's own page (``Host`` and ``Origin``
checked) and hold a JSON object; anything else changes nothing and gets 403 or 400.
"""

from __future__ import annotations

import errno
import hmac
import json
import math
import os
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, unquote, urlparse

from ..errors import CaviarError
from . import control

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class WatchError(CaviarError, ValueError):
    """Something to watch that is not a caviar run or study, or an unsafe server setting."""


def target_kind(path):
    if os.path.isdir(path) and control.is_run(path):
        return "run"
    if os.path.isfile(path) and path.endswith((".sqlite", ".db")):
        return "study"
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "history.csv")):
        raise WatchError(f"{path!r} is a finished run from before live records; train it again to watch it")
    raise WatchError(f"{path!r} is neither a caviar run directory (with state.json) nor a study file (.sqlite)")


def _finite(value):
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def run_payload(path):
    live = control.read_json(os.path.join(path, "live.json"), {}) or {}
    state = control.read_json(os.path.join(path, "state.json"), {}) or {}
    live["checkpoints"] = control.checkpoints(path)
    live["iterations"] = [_finite(c) for c in live.get("iterations", [])]
    return {"kind": "run", "path": path, "state": state, "history": live}


# A study's driver forks its workers while the dashboard may be serving it from a thread of the
# same process (caviar tune --watch). A fork in the middle of a read would give the worker
# SQLite's locks held by a thread it does not have, and the worker would wait on them forever:
# reads hold this lock, and a fork waits for it.
_READING = threading.Lock()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_READING.acquire, after_in_parent=_READING.release,
                        after_in_child=_READING.release)


def study_payload(path):
    with _READING:
        return _study_payload(path)


def _study_payload(path):
    from ..tune import Study, leaderboard
    from ..tune.objective import metric_for

    study = Study.open(path)
    try:
        settings = study.settings
        metric, higher = metric_for(settings)
        trials = []
        for t in study.trials():
            trials.append({"number": t["number"], "status": t["status"], "value": _finite(t["value"]), "rung": t["rung"],
                           "round": t["round"], "params": t["params"],
                           "curve": [_finite(e["dev_metric"]) for e in study.epochs(t["number"])]})
        board = [t["number"] for t in leaderboard(study, top=20)]
        return {"kind": "study", "path": path, "metric": metric, "higher": higher, "space": settings["space"],
                "strategy": settings["strategy"], "trials": trials, "leaderboard": board,
                "boxes": {str(k): v for k, v in study.boxes().items()}, "ensemble": _ensemble(settings, metric)}
    finally:
        study.close()


def _ensemble(settings, metric):
    """The greedy ensemble the driver last selected (``caviar.tune.ensemble``), for the page."""
    e = settings.get("ensemble")
    if not e:
        return None
    return {"members": e["members"], "counts": e["counts"], "value": _finite(e.get(metric)),
            "candidates": e.get("candidates")}


class Dashboard:
    """The watched targets and the server's settings."""

    def __init__(self, targets, host="127.0.0.1", port=8765, allow_remote=False, token=None):
        if host not in LOCAL_HOSTS and not allow_remote:
            raise WatchError(f"binding {host!r} exposes the controls to the network; pass --allow-remote to do so")
        self.token = token or secrets.token_urlsafe(16)  # controls always need it
        self.targets = {}
        for path in targets:
            self.add(path)
        self.host, self.port = host, port
        self.server = None

    def add(self, path, kind=None):
        """Watch a run directory or a study file (``kind`` skips the check, for a run that is
        about to start); return its name in the page's addresses."""
        path = os.path.abspath(os.fspath(path))
        kind = kind or target_kind(path)
        name = os.path.basename(path.rstrip("/")) or path
        if kind == "study":
            name = os.path.splitext(name)[0]
        key, n = name, 2
        while key in self.targets and self.targets[key]["path"] != path:
            key, n = f"{name}-{n}", n + 1
        self.targets[key] = {"id": key, "kind": kind, "path": path}
        return key

    def start(self):
        """Serve in a background thread; return the page's address."""
        handler = type("Handler", (_Handler,), {"dashboard": self})
        try:
            self.server = ThreadingHTTPServer((self.host, self.port), handler)
        except OSError as exc:
            hint = "; choose another with --port (0: any free port)" if exc.errno == errno.EADDRINUSE else ""
            raise WatchError(f"cannot serve the dashboard on {self.host}:{self.port}: {exc.strerror or exc}{hint}") from None
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self.url

    @property
    def url(self):
        host = f"[{self.host}]" if ":" in self.host else self.host
        # bound locally, the page gets the token as a same-site cookie; remotely, from this address
        return f"http://{host}:{self.port}/" + (f"?token={self.token}" if self.host not in LOCAL_HOSTS else "")

    def stop(self):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    dashboard: Dashboard
    server_version = "caviar-watch"

    def log_message(self, format, *args):  # quiet: the terminal belongs to the training run
        pass

    def _send(self, code, body, content_type="application/json", cookie=None):
        data = body if isinstance(body, bytes) else (json.dumps(body) if content_type == "application/json" else body).encode()
        self.send_response(code)
        if cookie:
            self.send_header("Set-Cookie", cookie)
        self.send_header("Content-Type", content_type + ("; charset=utf-8" if not content_type.startswith("image") else ""))
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def _target(self, key):
        return self.dashboard.targets.get(key)

    def do_GET(self):
        url = urlparse(self.path)
        parts = [unquote(p) for p in url.path.strip("/").split("/") if p]
        if not parts or parts[0] in ("run", "study"):
            if parts and self._target(parts[1] if len(parts) > 1 else "") is None:
                return self._send(404, _error_page(f"nothing is watched under the name {parts[-1]!r}", self.dashboard),
                                  "text/html")
            # the page's own requests carry the token as a cookie that browsers never send with a
            # request from another site (SameSite=Strict) and scripts cannot read (HttpOnly); bound
            # remotely, only a visitor who has the token in the address gets it
            given = parse_qs(url.query).get("token", [""])[0]
            local = self.dashboard.host in LOCAL_HOSTS
            cookie = f"caviar_token={self.dashboard.token}; Path=/; SameSite=Strict; HttpOnly" \
                if local or hmac.compare_digest(given.encode(), self.dashboard.token.encode()) else None
            return self._send(200, _static("index.html"), "text/html", cookie=cookie)
        if parts[0] == "static" and len(parts) == 2 and parts[1] in ("app.js", "style.css"):
            kind = "text/javascript" if parts[1].endswith(".js") else "text/css"
            return self._send(200, _static(parts[1]), kind)
        if parts == ["favicon.ico"]:
            return self._send(204, b"", "image/x-icon")
        if parts[:2] == ["api", "targets"]:
            return self._send(200, {"targets": list(self.dashboard.targets.values()),
                                    "token_required": True})
        if len(parts) == 3 and parts[0] == "api" and parts[1] in ("run", "study"):
            target = self._target(parts[2])
            if target is None or target["kind"] != parts[1]:
                return self._send(404, {"error": f"no {parts[1]} named {parts[2]!r} is watched"})
            try:
                payload = run_payload(target["path"]) if parts[1] == "run" else study_payload(target["path"])
            except CaviarError as exc:
                return self._send(500, {"error": str(exc)})
            return self._send(200, payload)
        return self._send(404, {"error": f"no such page: {url.path}"})

    def _same_site(self):
        """The request names this server (Host) and, when a browser says where it comes from
        (Origin), comes from this server's own page: a page elsewhere, or a name rebound to this
        address, cannot drive the controls."""
        port, host = self.dashboard.port, self.headers.get("Host", "")
        if self.dashboard.host in LOCAL_HOSTS:  # bound remotely, the token guards the controls
            allowed = {f"{n}:{port}" if ":" not in n else f"[{n}]:{port}" for n in LOCAL_HOSTS}
            if host not in allowed:
                return False
        origin = self.headers.get("Origin")
        return origin is None or urlparse(origin).netloc == host

    def do_POST(self):
        try:
            self._post()
        except Exception as exc:  # an answer, never a traceback in the training terminal
            self._send(500, {"error": f"{type(exc).__name__}: {exc}"})

    def _post(self):
        parts = [unquote(p) for p in urlparse(self.path).path.strip("/").split("/") if p]
        if not (len(parts) == 4 and parts[:2] == ["api", "run"] and parts[3] == "control"):
            return self._send(404, {"error": "controls are posted to /api/run/NAME/control"})
        if not self._same_site():
            return self._send(403, {"error": "controls are taken only from this server's own page (Host and Origin "
                                             "checked); nothing was changed"})
        token = self.dashboard.token
        jar = SimpleCookie(self.headers.get("Cookie", ""))
        given = self.headers.get("X-Caviar-Token") or (jar["caviar_token"].value if "caviar_token" in jar else "")
        if not hmac.compare_digest(given.encode(), token.encode()):
            return self._send(403, {"error": "a valid token is required for controls; nothing was changed"})
        target = self._target(parts[2])
        if target is None or target["kind"] != "run":
            return self._send(404, {"error": f"no run named {parts[2]!r} is watched"})
        try:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(min(length, 65536)) or b"{}")
            if not isinstance(body, dict):
                return self._send(400, {"error": f"a control is a JSON object like {{\"action\": \"pause\"}}, got "
                                                 f"{type(body).__name__}"})
            result = control.send(target["path"], body.get("action"), body.get("value"), wait=float(body.get("wait", 5)))
        except (ValueError, json.JSONDecodeError) as exc:
            return self._send(400, {"error": str(exc)})
        if result is None:
            return self._send(202, {"ok": True, "message": "queued; the run applies it before its next mini-batch"})
        return self._send(200 if result.get("ok") else 409, result)


def _static(name):
    return resources.files("caviar.watch").joinpath("static", name).read_bytes()


def _error_page(message, dashboard):
    import html

    items = "".join(f"<li>{html.escape(t['kind'])}: {html.escape(t['id'])}</li>" for t in dashboard.targets.values())
    return (f"<!doctype html><meta charset=utf-8><title>caviar: not found</title>"
            f"<h1>caviar watch</h1><p class=error>{html.escape(message)}</p><p>Watched:</p><ul>{items}</ul>"
            f"<p><a href='/'>back</a></p>")
