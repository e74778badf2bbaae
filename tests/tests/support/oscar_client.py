"""Drives a Spillway coordinator with OSCAR's own Python client (oscar-python, from PyPI), the way
an OSCAR user would, and prints what each call gave as JSON for the Rust test to check.

Usage: oscar_client.py ENDPOINT PASSWORD FDL WORKDIR
"""
import json
import os
import sys
import time

import requests
from oscar_python.client import Client

endpoint, password, fdl, work = sys.argv[1:5]
client = Client({
    "cluster_id": "edge",
    "endpoint": endpoint,
    "user": "oscar",
    "password": password,
    "ssl": False,
})
out = {}


def until_deployed(call):
    """Retries a call while no node runs the service yet (503) or it is unknown (404)."""
    deadline = time.time() + 30
    while True:
        try:
            return call()
        except requests.HTTPError as e:
            if e.response.status_code not in (404, 503) or time.time() > deadline:
                raise
            time.sleep(0.3)


out["info"] = client.get_cluster_info().json()
out["config"] = client.get_cluster_config().json()
out["status"] = client.get_cluster_status().json()
out["create_fdl"] = client.create_service(fdl).status_code
try:
    client.create_service(fdl)
    out["create_again"] = "accepted"
except ValueError as e:
    out["create_again"] = str(e)
echo = {
    "name": "echo",
    "runtime": "process",
    "cpu": "0.1",
    "memory": "16Mi",
    "image": "ghcr.io/grycap/alpine",
    "script": "#!/bin/sh\necho \"got $(cat \"$INPUT_FILE_PATH\")\"\n",
    "input": [{"storage_provider": "minio.default", "path": "echo/in"}],
}
out["create_dict"] = client.create_service(echo).status_code
out["services"] = sorted(s["name"] for s in client.list_services().json())
shout = client.get_service("shout").json()
out["token_length"] = len(shout["token"])
out["variables"] = shout["environment"]["variables"]
out["secrets"] = shout["environment"]["secrets"]
echo["script"] = "#!/bin/sh\necho \"said $(cat \"$INPUT_FILE_PATH\")\"\n"
out["update"] = client.update_service("echo", echo).status_code

output = os.path.join(work, "shouted.txt")
until_deployed(lambda: client.run_service("shout", input="hello oscar", output=output, timeout=60))
with open(output) as f:
    out["run_output"] = f.read()
said = until_deployed(lambda: client.run_service("echo", input="quietly", timeout=60))
out["run_stdout"] = said.text
out["run_async"] = client.run_service("shout", input="in the background", async_call=True).status_code

deadline = time.time() + 30
while time.time() < deadline:
    jobs = client.list_jobs("shout").json()["jobs"]
    if len(jobs) >= 2 and all(j["status"] == "Succeeded" for j in jobs.values()):
        break
    time.sleep(0.3)
out["jobs"] = jobs
first = sorted(jobs)[0]
out["log"] = client.get_job_logs("shout", first).text
out["remove_job"] = client.remove_job("shout", first).status_code
out["jobs_after_remove"] = sorted(client.list_jobs("shout").json()["jobs"])
out["remove_all_jobs"] = client.remove_all_jobs("shout").status_code
out["jobs_after_remove_all"] = client.list_jobs("shout").json()["jobs"]
out["remove_service"] = client.remove_service("echo").status_code
out["services_after"] = sorted(s["name"] for s in client.list_services().json())
print(json.dumps(out))
