"""``ccarchive serve`` configuration: cc-backend's config.json sections, the ccarchive section,
``-file`` indirection, environment and CLI overrides, and errors that name the key."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ccarchive.config import (
    ConfigError,
    load_archiving_config,
    load_config,
    mask_secrets,
    parse_duration,
    parse_listen,
    read_env_file,
)
from ccarchive.jobdb import JobDB

PUBLIC_KEY = base64.b64encode(
    Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
ENV = {"JWT_PUBLIC_KEY": PUBLIC_KEY}

#: A complete example: what an operator's cc-backend config.json plus the ccarchive section looks like.
EXAMPLE = {
    "main": {"addr": "127.0.0.1:8080", "db": "./var/job.db", "api-allowed-ips": ["*"],
             "api-subjects": {"subject-job-event": "cc.job.event", "subject-node-state": "cc.node.state"}},
    "archive": {"kind": "file", "path": "./var/job-archive", "compression": 7},
    "metric-store-external": [{"scope": "*", "url": "http://ccms:8082", "token": "tok-a"},
                              {"scope": "fritz-spr1tb", "url": "http://ccms2:8083", "token": "tok-b"}],
    "nats": {"address": "nats://127.0.0.1:4222", "username": "cc", "password": "secret"},
    "ccarchive": {"listen": "127.0.0.1:8090", "grace-period": "10m", "reconcile-interval": 30,
                  "reconcile-horizon": "30d", "retry": {"max-attempts": 5, "backoff": "1s", "backoff-max": "2m",
                                                      "storage-full-backoff-max": "1m"},
                  "core-scope-max-nodes": 4, "log-format": "json", "log-level": "debug",
                  "shutdown-timeout": "2m", "nats-subject": "ccarchive.job.event",
                  "hooks": {"callables": ["json:dumps"], "command": "/usr/local/bin/tag-job",
                            "command-timeout": "30s", "entry-points": False}},
}


def write(tmp_path: Path, doc: dict, name: str = "config.json") -> str:
    p = tmp_path / name
    p.write_text(json.dumps(doc))
    return str(p)


def minimal(tmp_path: Path, **sections) -> dict:
    doc = {"main": {"db": str(tmp_path / "job.db")}, "archive": {"kind": "file", "path": str(tmp_path / "arch")},
           "ccarchive": {"sources": {"*": {"kind": "synthetic"}}}}
    doc.update(sections)
    return doc


def test_full_example_is_read_from_cc_backend_sections(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(write(tmp_path, EXAMPLE), env=ENV)
    assert cfg.job_db == str(tmp_path / "var" / "job.db")  # relative to the working directory, as cc-backend
    assert cfg.archive_kind == "file" and cfg.archive_url == str(tmp_path / "var" / "job-archive")
    assert cfg.source == {"kind": "router", "routes": {
        "*": {"kind": "cc-metric-store", "url": "http://ccms:8082", "token": "tok-a"},
        "fritz-spr1tb": {"kind": "cc-metric-store", "url": "http://ccms2:8083", "token": "tok-b"}}}
    assert cfg.state_db == str(tmp_path / "var" / "ccarchive-state.db")
    assert (cfg.listen_host, cfg.listen_port) == ("127.0.0.1", 8090)
    assert (cfg.grace_period_s, cfg.reconcile_interval_s, cfg.reconcile_horizon_s) == (600, 30, 30 * 86400)
    assert (cfg.max_attempts, cfg.retry_backoff_s, cfg.retry_backoff_max_s) == (5, 1, 120)
    assert cfg.storage_retry_max_s == 60 and cfg.worker_config().storage_retry_max_s == 60
    assert cfg.core_scope_max_nodes == 4 and cfg.shutdown_timeout_s == 120
    assert (cfg.log_format, cfg.log_level) == ("json", "debug")
    assert cfg.nats is not None and cfg.nats.subject == "ccarchive.job.event"  # own subject beats api-subjects
    assert (cfg.nats.address, cfg.nats.username, cfg.nats.password) == ("nats://127.0.0.1:4222", "cc", "secret")
    assert cfg.hooks.callables == ["json:dumps"] and cfg.hooks.command == "/usr/local/bin/tag-job"
    assert cfg.hooks.command_timeout_s == 30 and cfg.hooks.entry_points is False
    assert cfg.jwt_public_key == PUBLIC_KEY and cfg.api_allowed_ips == ["*"]
    wc = cfg.worker_config()
    assert (wc.job_db, wc.archive_url, wc.core_scope_max_nodes) == (cfg.job_db, cfg.archive_url, 4)


def test_single_star_store_needs_no_router_and_api_subjects_give_the_subject(tmp_path: Path):
    doc = minimal(tmp_path, nats={"address": "nats://127.0.0.1:4222"})
    doc["main"]["api-subjects"] = {"subject-job-event": "cc.job.event"}
    doc["metric-store-external"] = [{"scope": "*", "url": "http://ccms:8082", "token": "t"}]
    del doc["ccarchive"]
    cfg = load_config(write(tmp_path, doc), env=ENV)
    assert cfg.source == {"kind": "cc-metric-store", "url": "http://ccms:8082", "token": "t"}
    assert cfg.nats is not None and cfg.nats.subject == "cc.job.event"
    assert (cfg.listen_host, cfg.listen_port, cfg.reconcile_interval_s) == ("127.0.0.1", 8090, 60)


def test_s3_and_sqlite_archives(tmp_path: Path):
    s3 = {"kind": "s3", "endpoint": "http://127.0.0.1:9000", "bucket": "jobarchive", "access-key": "AK",
          "secret-key": "SK", "region": "eu-central-1", "use-path-style": True}
    cfg = load_config(write(tmp_path, minimal(tmp_path, archive=s3)), env=ENV)
    assert cfg.archive_url == "s3://jobarchive"
    opts = cfg.storage_options
    assert (opts["key"], opts["secret"], opts["endpoint_url"]) == ("AK", "SK", "http://127.0.0.1:9000")
    assert opts["client_kwargs"]["region_name"] == "eu-central-1"
    assert opts["config_kwargs"] == {"s3": {"addressing_style": "path"}}
    cfg = load_config(write(tmp_path, minimal(tmp_path, archive={"kind": "sqlite", "db-path": "/data/a.db"})),
                      env=ENV)
    assert (cfg.archive_kind, cfg.archive_url) == ("sqlite", "sqlite:///data/a.db")


def test_file_indirection_of_sections(tmp_path: Path):
    (tmp_path / "archive.json").write_text(json.dumps({"kind": "file", "path": str(tmp_path / "elsewhere")}))
    (tmp_path / "cca.json").write_text(json.dumps({"sources": {"*": {"kind": "synthetic"}}, "listen": ":9999"}))
    doc = minimal(tmp_path)
    del doc["archive"], doc["ccarchive"]
    doc["archive-file"] = str(tmp_path / "archive.json")
    doc["ccarchive-file"] = str(tmp_path / "cca.json")
    cfg = load_config(write(tmp_path, doc), env=ENV)
    assert cfg.archive_url == str(tmp_path / "elsewhere")
    assert (cfg.listen_host, cfg.listen_port) == ("0.0.0.0", 9999)
    doc["archive"] = {"kind": "file", "path": "x"}
    with pytest.raises(ConfigError, match="both 'archive' and 'archive-file' are given"):
        load_config(write(tmp_path, doc), env=ENV)


def test_environment_and_cli_overrides_with_precedence(tmp_path: Path):
    path = write(tmp_path, minimal(tmp_path, ccarchive={"sources": {"*": {"kind": "synthetic"}},
                                                        "grace-period": 60, "listen": "127.0.0.1:1000"}))
    env = {**ENV, "CCARCHIVE_GRACE_PERIOD": "10m", "CCARCHIVE_LISTEN": "127.0.0.1:2000",
           "CCARCHIVE_JOB_DB": str(tmp_path / "other.db"), "CCARCHIVE_RECONCILE_INTERVAL": "false"}
    cfg = load_config(path, env=env)
    assert cfg.grace_period_s == 600 and cfg.listen_port == 2000 and cfg.job_db == str(tmp_path / "other.db")
    assert cfg.reconcile_interval_s is None  # false: one reconciler pass at start only
    cfg = load_config(path, env=env, overrides={"--listen=listen": "127.0.0.1:3000"})
    assert cfg.listen_port == 3000


@pytest.mark.parametrize("section, env, message", [
    ({"archive": {"kind": "nfs", "path": "/x"}}, {},
     "config.json: archive.kind: unknown kind 'nfs' (file, s3, sqlite)"),
    ({"archive": {"kind": "file"}}, {}, "config.json: archive.path: required for kind 'file'"),
    ({"archive": {"kind": "s3", "bucket": "b", "accessKey": "a"}}, {}, "'accessKey' is spelled 'access-key'"),
    ({"ccarchive": {"grace-perod": "5m"}}, {}, "config.json: ccarchive.grace-perod: unknown key"),
    ({"ccarchive": {"sources": {"*": {"kind": "synthetic"}}, "grace-period": "soon"}}, {},
     "config.json: ccarchive.grace-period: expected a duration"),
    ({"ccarchive": {"sources": {"*": {"kind": "synthetic"}}}}, {"CCARCHIVE_SHUTDOWN_TIMEOUT": "-5"},
     "CCARCHIVE_SHUTDOWN_TIMEOUT: ccarchive.shutdown-timeout: must not be negative"),
    # durations no timer takes (found by mutating the example: an OverflowError escaped)
    ({"ccarchive": {"sources": {"*": {"kind": "synthetic"}}, "grace-period": 10**400}}, {},
     "config.json: ccarchive.grace-period: expected a duration of at most 100 years"),
    ({"ccarchive": {"sources": {"*": {"kind": "synthetic"}}, "grace-period": math.inf}}, {},
     "config.json: ccarchive.grace-period: expected a duration of at most 100 years"),
    ({"ccarchive": {"sources": {"*": {"kind": "synthetic"}}, "grace-period": math.nan}}, {},
     "config.json: ccarchive.grace-period: expected a duration of at most 100 years"),
    ({"ccarchive": {"sources": {"*": {"kind": "synthetic"}}, "shutdown-timeout": "99999999999d"}}, {},
     "config.json: ccarchive.shutdown-timeout: expected a duration of at most 100 years"),
    ({"ccarchive": None, "metric-store-external": [{"scope": ["fritz"], "url": "http://ccms:8082"}]}, {},
     "config.json: metric-store-external[0].scope must be a string, got ['fritz']"),
    ({"ccarchive": None, "metric-store-external": [{"scope": "*", "url": "http://ccms:8082", "token": {"a": 1}}]}, {},
     "config.json: metric-store-external[0].token must be a string"),
    ({"ccarchive": {"sources": {"*": {"kind": "synthetic"}}, "listen": "8090"}}, {},
     "config.json: ccarchive.listen: expected \"host:port\""),
    ({"ccarchive": {"sources": {"*": {"kind": "synthetic"}}, "log-format": "xml"}}, {},
     "config.json: ccarchive.log-format: unknown value 'xml' (plain, json)"),
    ({"ccarchive": {"sources": {"*": {"kind": "influx"}}}}, {},
     "config.json: ccarchive.sources: unknown metric source kind 'influx'"),
    ({"ccarchive": {"sources": {"*": {"kind": "synthetic", "colour": 1}}}}, {}, "config.json: ccarchive.sources: "),
    ({"ccarchive": None, "metric-store": {"retention-in-memory": "24h"}}, {},
     "config.json: metric-store: cc-backend's in-process metric store cannot be read"),
    ({"ccarchive": None}, {}, "config.json: no metric source"),
    ({"ccarchive": {"sources": {"*": {"kind": "synthetic"}}, "nats-subject": "x.y"}}, {},
     "config.json: nats.address: required to subscribe to 'x.y'"),
    ({"ccarchive": {"sources": {"*": {"kind": "synthetic"}}, "retry": {"max-attempts": 0}}}, {},
     "config.json: ccarchive.retry.max-attempts: expected an integer >= 1"),
    ({"ccarchive": {"sources": {"*": {"kind": "synthetic"}}, "retry": {"storage-full-backoff-max": "100ms"}}},
     {}, "config.json: ccarchive.retry.storage-full-backoff-max: expected at least 1s, got '100ms'"),
    ({"ccarchive": {"sources": {"*": {"kind": "synthetic"}}, "retry": {"backof": "1s"}}}, {},
     "config.json: ccarchive.retry.backof: unknown key (max-attempts, backoff, backoff-max, storage-full-backoff-max)"),
    ({"ccarchive": {"sources": {"*": {"kind": "synthetic"}}, "hooks": {"callables": "x"}}}, {},
     "config.json: ccarchive.hooks.callables: expected a list"),
])
def test_errors_name_the_key(tmp_path: Path, section: dict, env: dict, message: str):
    doc = minimal(tmp_path)
    for k, v in section.items():
        if v is None:
            doc.pop(k, None)
        else:
            doc[k] = v
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, doc), env={**ENV, **env})
    assert message in str(exc.value)


def test_jwt_public_key_checks_and_env_file(tmp_path: Path):
    path = write(tmp_path, minimal(tmp_path))
    with pytest.raises(ConfigError, match="JWT_PUBLIC_KEY is not set"):
        load_config(path, env={})
    with pytest.raises(ConfigError, match="JWT_PUBLIC_KEY: not valid base64"):
        load_config(path, env={"JWT_PUBLIC_KEY": "not base64!"})
    with pytest.raises(ConfigError, match="JWT_PUBLIC_KEY: decodes to 3 bytes"):
        load_config(path, env={"JWT_PUBLIC_KEY": "YWJj"})
    dotenv = tmp_path / ".env"
    dotenv.write_text(f'# cc-backend\nexport JWT_PUBLIC_KEY="{PUBLIC_KEY}"\nSESSION_KEY=abc\n')
    assert read_env_file(dotenv)["SESSION_KEY"] == "abc"
    cfg = load_config(path, env={"CCARCHIVE_ENV_FILE": str(dotenv)})
    assert cfg.jwt_public_key == PUBLIC_KEY
    doc = minimal(tmp_path)
    doc["main"]["disable-authentication"] = True
    cfg = load_config(write(tmp_path, doc), env={})
    assert cfg.disable_authentication and cfg.jwt_public_key is None


def test_malformed_json_and_missing_file(tmp_path: Path):
    p = tmp_path / "config.json"
    p.write_text('{"main": {"db": "x",}}')
    with pytest.raises(ConfigError, match=r"config.json: malformed JSON: .* line 1 column"):
        load_config(str(p), env=ENV)
    with pytest.raises(ConfigError, match="cannot read .*nope.json"):
        load_config(str(tmp_path / "nope.json"), env=ENV)


def test_pipeline_features_not_available_are_refused(tmp_path: Path):
    doc = minimal(tmp_path, ccarchive={"sources": {"*": {"kind": "synthetic"}}, "resolution": 600})
    cfg = load_config(write(tmp_path, doc), env=ENV)
    import dataclasses

    from ccarchive.worker import WorkerConfig

    if "resolution" in {f.name for f in dataclasses.fields(WorkerConfig)}:
        assert cfg.worker_config().resolution == 600
    else:
        with pytest.raises(ConfigError, match="ccarchive.resolution: 600 is not supported"):
            cfg.worker_config()


def test_durations_and_listen_parsing():
    assert parse_duration("1h30m", "x") == 5400 and parse_duration("250ms", "x") == 0.25
    assert parse_duration(" 45 ", "x") == 45 and parse_duration("2d", "x") == 172800
    for bad in ("5 minutes", "", True, "m5"):
        with pytest.raises(ConfigError):
            parse_duration(bad, "x")
    assert parse_listen("[::1]:8090", "x") == ("::1", 8090) and parse_listen(":80", "x") == ("0.0.0.0", 80)
    with pytest.raises(ConfigError, match="invalid port"):
        parse_listen("host:99999", "x")


def test_serve_check_prints_effective_settings(tmp_path: Path, capsys, monkeypatch):
    from ccarchive.archive import open_archive
    from ccarchive.cli.serve_cmd import main

    JobDB.create(tmp_path / "job.db").close()
    open_archive(str(tmp_path / "arch"), create=True)
    monkeypatch.setenv("JWT_PUBLIC_KEY", PUBLIC_KEY)
    path = write(tmp_path, minimal(tmp_path))
    assert main(["--config", path, "--check", "--listen", "127.0.0.1:7777", "--set", "grace-period=90"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["listen_port"] == 7777 and shown["grace_period_s"] == 90 and shown["jwt_public_key"] == "***"
    assert main(["--config", path, "--check", "--set", "nosuchkey=1"]) == 1
    assert "--set nosuchkey: ccarchive.nosuchkey: unknown key" in capsys.readouterr().err


def test_parquet_output_needs_a_dataset_and_json(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = {"sources": {"*": {"kind": "synthetic"}}}
    cfg = load_config(write(tmp_path, minimal(tmp_path, ccarchive={**base, "formats": ["json", "parquet"],
                                                                   "parquet-url": "jobs-ds"})), env=ENV)
    assert cfg.parquet_url == f"parquet+{tmp_path / 'jobs-ds'}"
    assert cfg.worker_config().parquet_url == cfg.parquet_url
    assert load_config(write(tmp_path, minimal(tmp_path, ccarchive=base)), env=ENV).worker_config().parquet_url is None
    s3 = minimal(tmp_path, ccarchive={**base, "formats": ["json", "parquet"], "parquet-url": "s3://analysis/jobs"},
                 archive={"kind": "s3", "endpoint": "http://127.0.0.1:9000", "bucket": "arch",
                          "access-key": "k", "secret-key": "s"})
    worker = load_config(write(tmp_path, s3), env=ENV).worker_config()
    assert worker.parquet_url == "parquet+s3://analysis/jobs"
    assert worker.parquet_storage_options["key"] == "k"  # the archive's endpoint and credentials
    for extra, message in (({"formats": ["json", "parquet"]}, "parquet-url: ccarchive.formats includes"),
                           ({"parquet-url": "x"}, "does not include \"parquet\""),
                           ({"formats": ["parquet"], "parquet-url": "x"}, "must include \"json\""),
                           ({"formats": ["xml"]}, "expected a non-empty list of json, parquet")):
        with pytest.raises(ConfigError, match=message):
            load_config(write(tmp_path, minimal(tmp_path, ccarchive={**base, **extra})), env=ENV)


def test_gzip_level_and_threads(tmp_path: Path):
    base = {"sources": {"*": {"kind": "synthetic"}}}
    cfg = load_config(write(tmp_path, minimal(tmp_path, ccarchive={**base, "gzip-level": 6, "gzip-threads": 1})),
                      env=ENV)
    worker = cfg.worker_config()
    assert (worker.gzip_level, worker.gzip_threads) == (6, 1)
    default = load_config(write(tmp_path, minimal(tmp_path, ccarchive=base)), env=ENV).worker_config()
    assert (default.gzip_level, default.gzip_threads) == (3, None)
    assert load_config(write(tmp_path, minimal(tmp_path, ccarchive=base)),
                       env={**ENV, "CCARCHIVE_GZIP_LEVEL": "1"}).gzip_level == 1
    for extra, message in (({"gzip-level": 10}, "gzip-level: expected 0..9"), ({"gzip-level": "fast"}, "integer"),
                           ({"gzip-threads": 0}, "gzip-threads: expected an integer >= 1")):
        with pytest.raises(ConfigError, match=message):
            load_config(write(tmp_path, minimal(tmp_path, ccarchive={**base, **extra})), env=ENV)


def test_archiving_config_is_the_shared_part_without_the_sidecars_checks(tmp_path: Path, monkeypatch):
    """``archive``/``retry --config`` resolve job DB, archive and sources as serve does, but need
    no JWT key and ignore the sidecar's own keys; flags replace the file's values."""
    monkeypatch.chdir(tmp_path)
    doc = dict(EXAMPLE)
    doc["ccarchive"] = {**EXAMPLE["ccarchive"], "listen": "not an address", "hooks": {"command": ""}}
    path = write(tmp_path, doc)
    with pytest.raises(ConfigError, match="ccarchive.listen: expected"):
        load_config(path, env=ENV)
    with pytest.raises(ConfigError, match="JWT_PUBLIC_KEY is not set"):
        load_config(write(tmp_path, EXAMPLE, "served.json"), env={})
    cfg = load_archiving_config(path, env={})
    served = load_config(write(tmp_path, EXAMPLE, "served.json"), env=ENV)
    for name in ("job_db", "archive_kind", "archive_url", "storage_options", "source", "state_db", "max_attempts",
                 "retry_backoff_s", "core_scope_max_nodes", "formats", "parquet_url", "gzip_level"):
        assert getattr(cfg, name) == getattr(served, name), name
    assert not hasattr(cfg, "listen_port") and not hasattr(cfg, "jwt_public_key")
    assert cfg.worker_config().source == served.worker_config().source
    flags = load_archiving_config(path, env={}, job_db=str(tmp_path / "other" / "job.db"),
                                  archive_url="sqlite:///data/a.db")
    assert flags.job_db == str(tmp_path / "other" / "job.db")
    assert flags.state_db == str(tmp_path / "other" / "ccarchive-state.db")  # follows the job DB given
    assert (flags.archive_kind, flags.archive_url, flags.storage_options) == ("sqlite", "sqlite:///data/a.db", {})
    assert load_archiving_config(path, env={}, state_db=str(tmp_path / "s.db")).state_db == str(tmp_path / "s.db")
    del doc["metric-store-external"]
    with pytest.raises(ConfigError, match="no metric source"):
        load_archiving_config(write(tmp_path, doc), env={})


def test_every_secret_is_masked():
    """Source tokens (also inside router routes and replay storage options), passwords in URLs,
    S3 keys in cc-backend's and s3fs's spelling, NATS password and credentials, the JWT key."""
    from ccarchive.config import HookSettings, NatsSettings

    secrets = ["tok-a", "tok-b", "tok-c", "urlpw", "AKIA", "SK-s3fs", "SK-kebab", "AK-kebab", "natspw",
               "/etc/nats/user.creds", PUBLIC_KEY, "sess", "prom-tok", "Bearer xyz"]
    settings = {
        "source": {"kind": "router", "routes": {
            "*": {"kind": "cc-metric-store", "url": "http://ccms:8082", "token": "tok-a"},
            "fritz": {"kind": "prometheus", "url": "https://prom:urlpw@prom:9090", "token": "prom-tok",
                      "headers": {"Authorization": "Bearer xyz"}},
            "alex": {"kind": "replay", "archive": "s3://old", "storage-options": {"key": "AKIA", "secret": "SK-s3fs",
                                                                                  "token": "sess"}}}},
        "alone": {"kind": "cc-metric-store", "url": "http://ccms:8082", "token": "tok-b", "token-env": "CCMS_TOKEN"},
        "routes_list": [{"scope": "*", "url": "http://x", "token": "tok-c"}],
        "archive": {"kind": "s3", "access-key": "AK-kebab", "secret-key": "SK-kebab", "bucket": "b"},
        "storage_options": {"key": "AKIA", "secret": "SK-s3fs", "client_kwargs": {"region_name": "eu"}},
        "nats": NatsSettings("nats://cc:natspw@nats:4222", "cc.job", "cc", "natspw", "/etc/nats/user.creds"),
        "jwt_public_key": PUBLIC_KEY,
        "hooks": HookSettings(command="/usr/local/bin/tag-job"),
        "unset_token": None,
    }
    text = json.dumps(mask_secrets(settings))
    for secret in secrets:
        assert secret not in text, secret
    shown = json.loads(text)
    routes = shown["source"]["routes"]
    assert routes["*"] == {"kind": "cc-metric-store", "url": "http://ccms:8082", "token": "***"}
    assert routes["fritz"]["url"] == "https://prom:***@prom:9090"
    assert shown["alone"]["token-env"] == "CCMS_TOKEN"  # the name of a variable is no secret
    assert shown["storage_options"]["client_kwargs"] == {"region_name": "eu"}
    assert shown["nats"] == {"address": "nats://cc:***@nats:4222", "subject": "cc.job", "username": "cc",
                             "password": "***", "creds_file": "***"}
    assert shown["hooks"]["command"] == "/usr/local/bin/tag-job" and shown["unset_token"] is None
    assert shown["archive"]["bucket"] == "b" and shown["jwt_public_key"] == "***"


def test_serve_check_masks_the_metric_store_token(tmp_path: Path, capsys, monkeypatch):
    from ccarchive.archive import open_archive
    from ccarchive.cli.serve_cmd import main

    JobDB.create(tmp_path / "job.db").close()
    open_archive(str(tmp_path / "arch"), create=True)
    monkeypatch.setenv("JWT_PUBLIC_KEY", PUBLIC_KEY)
    doc = minimal(tmp_path, nats={"address": "nats://127.0.0.1:4222", "username": "cc", "password": "natspw"})
    doc["metric-store-external"] = [{"scope": "*", "url": "http://ccms:8082", "token": "secret-ccms-token"}]
    doc["main"]["api-subjects"] = {"subject-job-event": "cc.job.event"}
    del doc["ccarchive"]
    assert main(["--config", write(tmp_path, doc), "--check"]) == 0
    out = capsys.readouterr().out
    assert "secret-ccms-token" not in out and "natspw" not in out and PUBLIC_KEY not in out
    shown = json.loads(out)
    assert shown["source"] == {"kind": "cc-metric-store", "url": "http://ccms:8082", "token": "***"}
    assert shown["nats"]["password"] == "***"
