-- cc-backend job database, schema version 11 (final state after migrations 01..11).
--
-- Generated, not hand-written: the up-migrations of ClusterCockpit/cc-backend
-- internal/repository/migrations/sqlite3/01_init-schema .. 11_optimize-indexes (the v1.5.x
-- versions) were replayed in order on an empty database the way golang-migrate does (each file
-- in one transaction, foreign_keys=on, version table created first), and the statements below
-- are the resulting sqlite_master.sql entries, verbatim, in creation order (tables first).
-- SQLite stores CREATE statements without "IF NOT EXISTS", and with the table names and the
-- rewritten DEFAULT/REFERENCES clauses produced by migrations 05 and 08.  Result: 9 tables,
-- 54 named indexes on job (+ sqlite_autoindex_job_1 for UNIQUE(job_id, cluster, start_time)).
--
-- The last statement records the version the way golang-migrate's SetVersion leaves it.
-- ccarchive.jobdb.JobDB.create() executes this file; do not edit by hand.

CREATE TABLE schema_migrations (version uint64,dirty bool);

CREATE TABLE tag (
    id       INTEGER PRIMARY KEY,
    tag_type VARCHAR(255) NOT NULL,
    tag_name VARCHAR(255) NOT NULL, insert_ts TEXT DEFAULT CURRENT_TIMESTAMP, tag_scope TEXT NOT NULL DEFAULT 'global',
    CONSTRAINT be_unique UNIQUE (tag_type, tag_name));

CREATE TABLE jobtag (
    job_id INTEGER,
    tag_id INTEGER, insert_ts TEXT DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (job_id, tag_id),
    FOREIGN KEY (job_id) REFERENCES job (id) ON DELETE CASCADE,
    FOREIGN KEY (tag_id) REFERENCES tag (id) ON DELETE CASCADE);

CREATE TABLE "hpc_user" (
	username varchar(255) PRIMARY KEY NOT NULL,
	password varchar(255) DEFAULT NULL,
	ldap     tinyint      NOT NULL DEFAULT 0, /* col called "ldap" for historic reasons, fills the "AuthSource" */
	name     varchar(255) DEFAULT NULL,
	roles    varchar(255) NOT NULL DEFAULT "[]",
	email    varchar(255) DEFAULT NULL, projects varchar(255) NOT NULL);

CREATE TABLE "configuration" (
username varchar(255),
confkey  varchar(255),
value    text,
PRIMARY KEY (username, confkey),
FOREIGN KEY (username) REFERENCES "hpc_user" (username) ON DELETE CASCADE ON UPDATE NO ACTION);

CREATE TABLE "job_cache" (
    id INTEGER PRIMARY KEY,
    job_id BIGINT NOT NULL,
    cluster VARCHAR(255) NOT NULL,
    subcluster VARCHAR(255) NOT NULL,
    submit_time BIGINT NOT NULL DEFAULT 0, -- Unix timestamp
    start_time BIGINT NOT NULL DEFAULT 0, -- Unix timestamp
    hpc_user VARCHAR(255) NOT NULL,
    project VARCHAR(255) NOT NULL,
    cluster_partition VARCHAR(255),
    array_job_id BIGINT,
    duration INT NOT NULL,
    walltime INT NOT NULL,
    job_state VARCHAR(255) NOT NULL
    CHECK (job_state IN (
        'boot_fail', 'cancelled', 'completed', 'deadline',
        'failed', 'node_fail', 'out_of_memory', 'pending',
        'preempted', 'running', 'suspended', 'timeout'
    )),
    meta_data TEXT,          -- JSON
    resources TEXT NOT NULL, -- JSON
    num_nodes INT NOT NULL,
    num_hwthreads INT,
    num_acc INT,
    smt TINYINT NOT NULL DEFAULT 1 CHECK (smt IN (0, 1)),
    shared TEXT NOT NULL
    CHECK (shared IN ("none", "single_user", "multi_user")),
    monitoring_status TINYINT NOT NULL DEFAULT 1
    CHECK (monitoring_status IN (0, 1, 2, 3)),
    energy REAL NOT NULL DEFAULT 0.0,
    energy_footprint TEXT DEFAULT NULL,
    footprint TEXT DEFAULT NULL,
    UNIQUE (job_id, cluster, start_time)
);

CREATE TABLE "job" (
    id INTEGER PRIMARY KEY,
    job_id BIGINT NOT NULL,
    cluster TEXT NOT NULL,
    subcluster TEXT NOT NULL,
    submit_time BIGINT NOT NULL DEFAULT 0, -- Unix timestamp
    start_time BIGINT NOT NULL DEFAULT 0, -- Unix timestamp
    hpc_user TEXT NOT NULL,
    project TEXT NOT NULL,
    cluster_partition TEXT,
    array_job_id BIGINT,
    duration INT NOT NULL,
    walltime INT NOT NULL,
    job_state TEXT NOT NULL
    CHECK (job_state IN (
        'boot_fail', 'cancelled', 'completed', 'deadline',
        'failed', 'node_fail', 'out_of_memory', 'pending',
        'preempted', 'running', 'suspended', 'timeout'
    )),
    meta_data TEXT,          -- JSON
    resources TEXT NOT NULL, -- JSON
    num_nodes INT NOT NULL,
    num_hwthreads INT,
    num_acc INT,
    smt INT NOT NULL DEFAULT 1,
    shared TEXT NOT NULL
    CHECK (shared IN ("none", "single_user", "multi_user")),
    monitoring_status TINYINT NOT NULL DEFAULT 1
    CHECK (monitoring_status IN (0, 1, 2, 3)),
    energy REAL NOT NULL DEFAULT 0.0,
    energy_footprint TEXT DEFAULT NULL,
    footprint TEXT DEFAULT NULL,
    UNIQUE (job_id, cluster, start_time)
);

CREATE TABLE "node" (
    id INTEGER PRIMARY KEY,
    hostname VARCHAR(255) NOT NULL,
    cluster VARCHAR(255) NOT NULL,
    subcluster VARCHAR(255) NOT NULL,
    meta_data TEXT,          -- JSON
    UNIQUE (hostname, cluster)
);

CREATE TABLE "node_state" (
    id INTEGER PRIMARY KEY,
    time_stamp INTEGER NOT NULL,
    jobs_running INTEGER DEFAULT 0 NOT NULL,
    cpus_allocated INTEGER DEFAULT 0 NOT NULL,
    memory_allocated INTEGER DEFAULT 0 NOT NULL,
    gpus_allocated INTEGER DEFAULT 0 NOT NULL,
    node_state VARCHAR(255) NOT NULL
    CHECK (node_state IN (
        'allocated', 'reserved', 'idle', 'mixed',
        'down', 'unknown'
    )),
    health_state VARCHAR(255) NOT NULL
    CHECK (health_state IN (
        'full', 'partial', 'failed'
    )),
    health_metrics TEXT,          -- JSON array of strings
    node_id INTEGER,
    FOREIGN KEY (node_id) REFERENCES node (id)
);

CREATE UNIQUE INDEX version_unique ON schema_migrations (version);

CREATE INDEX jobs_cluster_user ON job (cluster, hpc_user);

CREATE INDEX jobs_cluster_project ON job (cluster, project);

CREATE INDEX jobs_cluster_subcluster ON job (cluster, subcluster);

CREATE INDEX jobs_cluster_numnodes ON job (cluster, num_nodes);

CREATE INDEX jobs_cluster_numhwthreads ON job (cluster, num_hwthreads);

CREATE INDEX jobs_cluster_numacc ON job (cluster, num_acc);

CREATE INDEX jobs_cluster_energy ON job (cluster, energy);

CREATE INDEX jobs_cluster_duration_starttime ON job (cluster, duration, start_time);

CREATE INDEX jobs_cluster_starttime_duration ON job (cluster, start_time, duration);

CREATE INDEX jobs_cluster_partition_user ON job (cluster, cluster_partition, hpc_user);

CREATE INDEX jobs_cluster_partition_project ON job (cluster, cluster_partition, project);

CREATE INDEX jobs_cluster_partition_jobstate ON job (cluster, cluster_partition, job_state);

CREATE INDEX jobs_cluster_partition_shared ON job (cluster, cluster_partition, shared);

CREATE INDEX jobs_cluster_partition_duration_starttime ON job (cluster, cluster_partition, duration, start_time);

CREATE INDEX jobs_cluster_partition_starttime_duration ON job (cluster, cluster_partition, start_time, duration);

CREATE INDEX jobs_cluster_jobstate_starttime_duration ON job (cluster, job_state, start_time, duration);

CREATE INDEX jobs_cluster_jobstate_duration_starttime ON job (cluster, job_state, duration, start_time);

CREATE INDEX jobs_cluster_shared_user ON job (cluster, shared, hpc_user);

CREATE INDEX jobs_cluster_shared_project ON job (cluster, shared, project);

CREATE INDEX jobs_cluster_shared_starttime_duration ON job (cluster, shared, start_time, duration);

CREATE INDEX jobs_cluster_shared_duration_starttime ON job (cluster, shared, duration, start_time);

CREATE INDEX jobs_user_starttime_duration ON job (hpc_user, start_time, duration);

CREATE INDEX jobs_user_duration_starttime ON job (hpc_user, duration, start_time);

CREATE INDEX jobs_project_user ON job (project, hpc_user);

CREATE INDEX jobs_project_starttime_duration ON job (project, start_time, duration);

CREATE INDEX jobs_project_duration_starttime ON job (project, duration, start_time);

CREATE INDEX jobs_jobstate_user ON job (job_state, hpc_user);

CREATE INDEX jobs_jobstate_project ON job (job_state, project);

CREATE INDEX jobs_jobstate_starttime_duration ON job (job_state, start_time, duration);

CREATE INDEX jobs_jobstate_duration_starttime ON job (job_state, duration, start_time);

CREATE INDEX jobs_shared_user ON job (shared, hpc_user);

CREATE INDEX jobs_shared_project ON job (shared, project);

CREATE INDEX jobs_shared_starttime_duration ON job (shared, start_time, duration);

CREATE INDEX jobs_shared_duration_starttime ON job (shared, duration, start_time);

CREATE INDEX jobs_arrayjobid_starttime ON job (array_job_id, start_time);

CREATE INDEX jobs_duration_starttime ON job (duration, start_time);

CREATE INDEX jobs_numnodes_starttime ON job (num_nodes, start_time);

CREATE INDEX jobs_numhwthreads_starttime ON job (num_hwthreads, start_time);

CREATE INDEX jobs_numacc_starttime ON job (num_acc, start_time);

CREATE INDEX jobs_energy_starttime ON job (energy, start_time);

CREATE INDEX jobs_starttime_duration ON job (start_time, duration);

CREATE INDEX jobs_numnodes_duration ON job (num_nodes, duration);

CREATE INDEX jobs_numhwthreads_duration ON job (num_hwthreads, duration);

CREATE INDEX jobs_numacc_duration ON job (num_acc, duration);

CREATE INDEX jobs_energy_duration ON job (energy, duration);

CREATE INDEX jobs_starttime ON job (start_time);

CREATE INDEX nodes_cluster ON node (cluster);

CREATE INDEX nodes_cluster_subcluster ON node (cluster, subcluster);

CREATE INDEX nodestates_timestamp ON node_state (time_stamp);

CREATE INDEX nodestates_state_timestamp ON node_state (node_state, time_stamp);

CREATE INDEX nodestates_health_timestamp ON node_state (health_state, time_stamp);

CREATE INDEX nodestates_nodeid_state ON node_state (node_id, node_state);

CREATE INDEX nodestates_nodeid_health ON node_state (node_id, health_state);

CREATE INDEX nodestates_nodeid_timestamp ON node_state (node_id, time_stamp DESC);

CREATE INDEX tags_jobid ON jobtag (job_id);

CREATE INDEX tags_tagid ON jobtag (tag_id);

CREATE INDEX jobs_cluster_user_starttime_stats
  ON job (cluster, hpc_user, start_time, duration, job_state, num_nodes, num_hwthreads, num_acc);

CREATE INDEX jobs_cluster_project_starttime_stats
  ON job (cluster, project, start_time, duration, job_state, num_nodes, num_hwthreads, num_acc);

CREATE INDEX jobs_cluster_jobstate_user_stats
  ON job (cluster, job_state, hpc_user, duration, start_time, num_nodes, num_hwthreads, num_acc);

CREATE INDEX jobs_cluster_jobstate_project_stats
  ON job (cluster, job_state, project, duration, start_time, num_nodes, num_hwthreads, num_acc);

CREATE INDEX jobs_cluster_jobstate_subcluster_stats
  ON job (cluster, job_state, subcluster, duration, start_time, num_nodes, num_hwthreads, num_acc);

CREATE INDEX jobs_running_user_stats
  ON job (cluster, hpc_user, num_nodes, num_hwthreads, num_acc, duration, start_time)
  WHERE job_state = 'running';

CREATE INDEX jobs_running_project_stats
  ON job (cluster, project, num_nodes, num_hwthreads, num_acc, duration, start_time)
  WHERE job_state = 'running';

CREATE INDEX jobs_running_subcluster_stats
  ON job (cluster, subcluster, num_nodes, num_hwthreads, num_acc, duration, start_time)
  WHERE job_state = 'running';

INSERT INTO schema_migrations (version, dirty) VALUES (11, 0);
