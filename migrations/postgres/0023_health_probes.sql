-- Each `ecert serve` instance writes its row every probe (every 2 s): /healthz reports a
-- database that answers reads but accepts no writes (a full disk, a read-only replica, a
-- revoked privilege) as a fault (issue 13, defect 4). Rows of instances gone for a day are
-- removed by the probes of the others.
CREATE TABLE health_probes (
    instance   TEXT PRIMARY KEY NOT NULL,
    written_at BIGINT NOT NULL
);
