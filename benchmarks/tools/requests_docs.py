"""The Rodin docs' style: list a task with requests.post, then requests.get(url).content each file.

Sequential, one module-level call per request (no Session), whole body in memory.
"""

from __future__ import annotations

import os

import _job
import requests

args, job = _job.parse(__doc__)
verify = args.ca_file or True  # the test CA over HTTPS
headers = {"Authorization": f"Bearer {job['key']}"}
for uuid in job["tasks"]:
    response = requests.post(
        f"{job['base_url']}/download", headers=headers, json={"task_uuid": uuid}
    )
    response.raise_for_status()
    folder = os.path.join(args.out, uuid)
    os.makedirs(folder, exist_ok=True)
    for item in response.json()["list"]:
        r = requests.get(item["url"], verify=verify)
        r.raise_for_status()
        with open(os.path.join(folder, item["name"]), "wb") as f:
            f.write(r.content)
