"""Runs a Python program and an asynchronous shell job through `warden serve`.

    python3 clients/python/example.py http://127.0.0.1:8080 wdn_...
"""

import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from warden_client import Warden, WardenError  # noqa: E402

base, key = sys.argv[1], sys.argv[2]
w = Warden(base, key)
r = w.execute("python", {"main.py": "import sys\nprint(sys.stdin.read().upper())"}, stdin="hello")
print("execute:", r.status, repr(r.stdout), "ledger", r.ledger_index)
sid = w.submit("sh", {"job.sh": "echo queued-$((6*7))"})
r = w.wait(sid)
print("submission:", r.status, repr(r.stdout), "ledger", r.ledger_index)
try:
    w.execute("cobol", {"a": "x"})
except WardenError as e:
    print("refused:", e.status, e.code)
