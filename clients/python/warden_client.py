"""A small client for `warden serve` (standard library only).

    from warden_client import Warden
    w = Warden("http://127.0.0.1:8080", api_key)
    r = w.execute("python", {"main.py": "print(2 + 2)"})
    print(r.stdout, r.status, r.ledger_index)

Errors from the service raise `WardenError` with its HTTP status, its
machine-readable `code` and its message; `Retry-After` is kept for 429
and 503.
"""

import base64
import json
import time
import urllib.error
import urllib.request

__all__ = ["Warden", "WardenError", "Result"]


class WardenError(Exception):
    """The service refused a request (4xx/5xx)."""

    def __init__(self, status, code, message, retry_after=None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


class Result:
    """What one run produced: its output (decoded), report and ledger index."""

    def __init__(self, body):
        self.raw = body
        self.stdout = _decode(body.get("stdout", ""), body.get("stdout_encoding", "utf8"))
        self.stderr = _decode(body.get("stderr", ""), body.get("stderr_encoding", "utf8"))
        self.report = body.get("report", {})
        self.status = self.report.get("status")
        self.exit_code = self.report.get("exit_code")
        self.ledger_index = body.get("ledger_index")

    def __repr__(self):
        return f"Result(status={self.status!r}, exit_code={self.exit_code!r}, ledger_index={self.ledger_index!r})"


def _decode(text, encoding):
    if encoding == "base64":
        return base64.b64decode(text)
    return text


def _files(files):
    """{name: str|bytes} → the API's file list (bytes go as base64)."""
    out = []
    for name, content in files.items():
        if isinstance(content, bytes):
            out.append({"name": name, "content": base64.b64encode(content).decode(), "encoding": "base64"})
        else:
            out.append({"name": name, "content": content})
    return out


class Warden:
    """One service, one API key."""

    def __init__(self, base_url, api_key, timeout=60):
        self.base = base_url.rstrip("/")
        self.key = api_key
        self.timeout = timeout

    def _call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.key}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
                return json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                err = json.loads(raw)
            except ValueError:
                err = {"code": "http_error", "message": raw.decode(errors="replace")}
            retry = e.headers.get("Retry-After")
            raise WardenError(e.code, err.get("code"), err.get("message"),
                              int(retry) if retry and retry.isdigit() else None) from None

    @staticmethod
    def request(language, files, entry=None, stdin=None, args=None, limits=None, capabilities=None):
        """The body of an execute request (also a submission's)."""
        body = {"language": language, "files": _files(files)}
        if entry is not None:
            body["entry"] = entry
        if stdin is not None:
            body["stdin"] = stdin
        if args:
            body["args"] = list(args)
        if limits:
            body["limits"] = dict(limits)
        if capabilities:
            body["capabilities"] = list(capabilities)
        return body

    def execute(self, language, files, **kw):
        """Runs and waits: POST /v1/execute."""
        return Result(self._call("POST", "/v1/execute", self.request(language, files, **kw)))

    def submit(self, language, files, callback_url=None, **kw):
        """Queues: POST /v1/submissions; returns the id."""
        body = self.request(language, files, **kw)
        if callback_url:
            body["callback_url"] = callback_url
        return self._call("POST", "/v1/submissions", body)["id"]

    def submission(self, sid):
        """GET /v1/submissions/{id}: the record, as the service keeps it."""
        return self._call("GET", f"/v1/submissions/{sid}")

    def wait(self, sid, timeout=60.0, poll=0.05):
        """Polls a submission until it is done or failed; its Result."""
        deadline = time.monotonic() + timeout
        while True:
            s = self.submission(sid)
            if s["status"] == "done":
                return Result(s["result"])
            if s["status"] == "failed":
                raise WardenError(0, "failed", json.dumps(s.get("error")))
            if time.monotonic() > deadline:
                raise TimeoutError(f"submission {sid} still {s['status']}")
            time.sleep(poll)

    def runtimes(self):
        """GET /v1/runtimes."""
        return self._call("GET", "/v1/runtimes")
