#!/usr/bin/env python3
"""An HTTP endpoint replica for the tests: a real HTTP server (an `endpoint` replica is any HTTP
server), with a behaviour chosen on the command line, recording what it receives.

    endpoint.py MODE PORT RECORD_FILE

Modes:
  ok              fetch the input from the envelope's presigned URL, check its SHA-256, record
                  `ran JOB NAME`, answer 200
  fail            record `refused JOB`, answer 503
  hang            record `received JOB`, never answer (a slow endpoint that does not run it)
  reset           record `received JOB`, reset the connection without running it
  run-then-reset  run it as `ok` does, report `succeeded` through the envelope's callback, then
                  reset the connection (the answer is lost, the job ran)
  runner          start the real runner (`$SPILLWAY_AGENT run-job --envelope -`) on the envelope,
                  record `started JOB`, answer 202; the runner fetches the input, runs the
                  function's script, uploads the outputs and reports through the callback
  runner-once     as `runner` for the first job; then, at capacity, record `refused JOB` and
                  answer 503

Every mode also records `traceparent JOB PARENT_ID` for a W3C `traceparent` header whose trace
id is the job id, or `bad-traceparent JOB HEADER` for any other.
"""

import hashlib
import http.server
import json
import os
import subprocess
import socket
import struct
import sys
import threading
import time
import urllib.request

MODE, PORT, RECORD = sys.argv[1], int(sys.argv[2]), sys.argv[3]
lock = threading.Lock()
taken = []


def record(line):
    with lock, open(RECORD, "a") as f:
        f.write(line + "\n")


def run(envelope):
    with urllib.request.urlopen(envelope["input"]["url"], timeout=10) as r:
        data = r.read()
    if hashlib.sha256(data).hexdigest() != envelope["input"]["sha256"]:
        raise ValueError("input does not match its SHA-256")
    record(f"ran {envelope['job']} {envelope['input']['name']} {data.decode().upper()!r}")


def reset(handler):
    # SO_LINGER 0: close() sends RST instead of FIN.
    handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    handler.connection.close()


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        envelope = json.loads(body)
        job = envelope["job"]
        if self.headers.get("Idempotency-Key") != job:
            record(f"bad-idempotency-key {job}")
        # W3C trace context: version 00, the job id as the trace id, a parent id, sampled.
        parts = (self.headers.get("traceparent") or "").split("-")
        if (len(parts) == 4 and parts[0] == "00" and parts[1] == job and parts[3] == "01"
                and len(parts[2]) == 16 and int(parts[2], 16) != 0):
            record(f"traceparent {job} {parts[2]}")
        else:
            record(f"bad-traceparent {job} {self.headers.get('traceparent')!r}")
        mode = MODE
        if MODE == "runner-once":
            with lock:
                mode = "runner" if not taken else "fail"
                taken.append(job)
        if mode == "ok":
            run(envelope)
            self.send_response(200)
            self.end_headers()
        elif mode == "fail":
            record(f"refused {job}")
            self.send_response(503)
            self.end_headers()
            self.wfile.write(b"overloaded")
        elif mode == "hang":
            record(f"received {job}")
            time.sleep(30)
            reset(self)
        elif mode == "reset":
            record(f"received {job}")
            reset(self)
        elif mode == "runner":
            work = os.environ.get("RUNNER_WORK_DIR", "/tmp")
            proc = subprocess.Popen(
                [os.environ["SPILLWAY_AGENT"], "run-job", "--envelope", "-", "--work-dir", work],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
            )
            proc.stdin.write(body)
            proc.stdin.close()
            threading.Thread(target=proc.wait, daemon=True).start()
            record(f"started {job}")
            self.send_response(202)
            self.end_headers()
        elif mode == "run-then-reset":
            run(envelope)
            req = urllib.request.Request(
                envelope["callback"],
                data=json.dumps({"status": "succeeded"}).encode(),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            urllib.request.urlopen(req, timeout=10).read()
            reset(self)


server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
server.daemon_threads = True
print("listening", flush=True)
server.serve_forever()
