"""A minimal Signalboard webhook receiver (Flask): verify the signature and the timestamp window, then dedupe by id.

    WEBHOOK_SECRET=... flask --app docs/webhook_receiver.py run --port 9000
"""

import hashlib
import hmac
import os
import time

from flask import Flask, abort, request

app = Flask(__name__)
SECRET = os.environ["WEBHOOK_SECRET"].encode()
seen: set[str] = set()  # use your database in production: events are delivered at least once


@app.post("/signalboard")
def signalboard():
    timestamp = request.headers.get("X-Signalboard-Timestamp", "")
    mac = hmac.new(SECRET, timestamp.encode() + b"." + request.get_data(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(request.headers.get("X-Signalboard-Signature", ""), f"sha256={mac}"):
        abort(401)
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > 300:  # a replayed old request
        abort(401)
    for event in request.get_json()["events"]:
        if event["id"] not in seen:
            seen.add(event["id"])
            print(event["type"], event)  # your handling here; answer 2xx only once it is safely recorded
    return "", 204
