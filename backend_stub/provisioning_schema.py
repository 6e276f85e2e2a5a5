"""The provisioning tables in the backend's SQLite file, and the migrations of stores made before them.

Created on open by backend_stub.provisioning_store, next to BackendStore's tables in the same file.
"""

from __future__ import annotations

SCHEMA = """
CREATE TABLE IF NOT EXISTS provisioning_vehicles (
    vin          TEXT PRIMARY KEY,
    legal_ecall  INTEGER NOT NULL DEFAULT 0,
    last_version INTEGER NOT NULL DEFAULT 0,  -- highest version ever allocated: never reused
    brand        TEXT NOT NULL DEFAULT 'BMW',
    equipment    TEXT,  -- option codes the vehicle is built with, comma-separated; NULL: not recorded
    first_registration TEXT  -- YYYY-MM-DD ("Erstzulassung"); NULL: not recorded
);
CREATE TABLE IF NOT EXISTS provisioning_files (
    vin          TEXT NOT NULL,
    version      INTEGER NOT NULL,
    operation    TEXT NOT NULL,
    issued_ms    INTEGER NOT NULL,
    expires_ms   INTEGER NOT NULL,
    signed       BLOB NOT NULL,
    state        TEXT NOT NULL,
    changed_ms   INTEGER NOT NULL,
    code         TEXT,
    reason       TEXT,
    publications INTEGER NOT NULL DEFAULT 0,
    published_ms INTEGER,
    PRIMARY KEY (vin, version)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS provisioning_files_by_state ON provisioning_files (state, vin);
CREATE TABLE IF NOT EXISTS provisioning_results (
    vin         TEXT NOT NULL,
    epoch       BLOB NOT NULL DEFAULT x'',
    seq         INTEGER NOT NULL,
    created_ms  INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    version     INTEGER,
    status      TEXT NOT NULL,
    code        TEXT,
    reason      TEXT,
    attributed  INTEGER,  -- the file version this result was booked against, if any
    PRIMARY KEY (vin, epoch, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS capability_reports (
    vin         TEXT PRIMARY KEY,
    ordinal     INTEGER NOT NULL DEFAULT 0,
    seq         INTEGER NOT NULL,
    created_ms  INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    report      BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS provisioning_changes (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    counter INTEGER NOT NULL
);
INSERT OR IGNORE INTO provisioning_changes VALUES (1, 0);
"""

# Stores made before queue epochs: results and reports came from the legacy epoch (empty, ordinal 0).
MIGRATE_TO_EPOCHS = """
ALTER TABLE provisioning_results RENAME TO provisioning_results_before_epochs;
CREATE TABLE provisioning_results (
    vin TEXT NOT NULL, epoch BLOB NOT NULL DEFAULT x'', seq INTEGER NOT NULL, created_ms INTEGER NOT NULL,
    received_ms INTEGER NOT NULL, version INTEGER, status TEXT NOT NULL, code TEXT, reason TEXT, attributed INTEGER,
    PRIMARY KEY (vin, epoch, seq)
) WITHOUT ROWID;
INSERT INTO provisioning_results SELECT vin, x'', seq, created_ms, received_ms, version, status, code, reason,
    attributed FROM provisioning_results_before_epochs;
DROP TABLE provisioning_results_before_epochs;
ALTER TABLE capability_reports ADD COLUMN ordinal INTEGER NOT NULL DEFAULT 0;
"""

# Stores made before issue 12 knew no brand, equipment or first registration (NULL: not recorded).
MIGRATE_TO_VEHICLE_BUILD = """
ALTER TABLE provisioning_vehicles ADD COLUMN brand TEXT NOT NULL DEFAULT 'BMW';
ALTER TABLE provisioning_vehicles ADD COLUMN equipment TEXT;
ALTER TABLE provisioning_vehicles ADD COLUMN first_registration TEXT
"""
