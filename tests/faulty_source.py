"""A synthetic source with injectable faults, read from a JSON file at every fetch so a test can
change them while the worker runs: {"fail": [jobId...], "transient": {jobId: n_failures},
"slow": {jobId: seconds_per_metric}, "slow_all": seconds_per_metric, "enospc": {jobId: n_failures},
"crash": [jobId...]}.
Used through the registry's "python" kind.  ``enospc`` raises the OSError a full disk gives, as if
writing the archive failed; ``crash`` ends the worker process on the spot, as a segfault in a
kernel would."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

from ccarchive.errors import InputError, TransientError
from ccarchive.sources.synthetic import SyntheticSource


class FaultySource(SyntheticSource):
    def __init__(self, faults_file: str, **kwargs):
        super().__init__(**kwargs)
        self.faults_file = faults_file
        self.transient_seen: dict[int, int] = {}
        self.enospc_seen: dict[int, int] = {}

    def _faults(self) -> dict:
        try:
            return json.loads(Path(self.faults_file).read_text())
        except FileNotFoundError:
            return {}

    def fetch(self, job, cluster, metric, scope, requests):
        faults = self._faults()
        if job.job_id in faults.get("crash", []):
            os._exit(139)
        if job.job_id in faults.get("fail", []):
            raise InputError(f"{job.label}: injected data failure in {metric.name}")
        budget = faults.get("transient", {}).get(str(job.job_id), 0)
        seen = self.transient_seen.get(job.job_id, 0)
        if seen < budget:
            self.transient_seen[job.job_id] = seen + 1
            raise TransientError(f"{job.label}: injected store timeout ({seen + 1}/{budget})")
        if self.enospc_seen.get(job.job_id, 0) < faults.get("enospc", {}).get(str(job.job_id), 0):
            self.enospc_seen[job.job_id] = self.enospc_seen.get(job.job_id, 0) + 1
            raise OSError(errno.ENOSPC, "No space left on device", f"/archive/{job.cluster}/{job.job_id}")
        delay = faults.get("slow", {}).get(str(job.job_id), faults.get("slow_all", 0))
        if delay:
            marker = faults.get("started_marker")
            if marker:
                tmp = Path(f"{marker}.{os.getpid()}.tmp")  # published whole: whoever sees it can read the pid
                tmp.write_text(str(os.getpid()))
                os.replace(tmp, marker)
            time.sleep(delay)
        return super().fetch(job, cluster, metric, scope, requests)
