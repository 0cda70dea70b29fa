"""Default playbooks for the local action family (installed as Playbook rows).

Each diagnosis listed here has a local remedy that really addresses it. Diagnoses with no
safe generic local fix (memory_pressure, high_cpu, latency_spike, benchmark_regression) get
an escalate-with-evidence playbook in ``remediation.defaults``, which is also the fallback
when the service has no resource a remedy here needs (disk_pressure without a declared cache).
Every step acts on a resource of the incident's service in the inventory (the kind its
action takes: a SQLite file, a cache directory, a supervised service, a PostgreSQL
target). When the service has several resources of that kind, the alert names one
with the label ``resource``. ``{params.<key>}`` / ``{snapshot.<key>}`` in a contract
value are read at verification time. When several playbooks remedy one diagnosis
(database_locked: PostgreSQL or SQLite), the planner takes the best ranked one whose
resource kinds the service has.
"""

PLAYBOOKS = [
    {
        "name": "sqlite-wal-checkpoint",
        "description": (
            "Copy the SQLite write-ahead log back into the database and truncate it "
            "(PRAGMA wal_checkpoint(TRUNCATE)); never deletes the -wal/-shm files."
        ),
        "diagnosis_codes": ["database_wal_bloat"],
        "steps": [
            {
                "action": "sqlite.checkpoint",
                "contract": [{"field": "wal_bytes", "op": "<=", "value": 1048576, "within": 10}],
            }
        ],
        "tier": 1,
        "cooldown_seconds": 300,
    },
    {
        "name": "postgres-terminate-blockers",
        "description": (
            "Terminate client sessions that have blocked others for 5 s or more on the service's PostgreSQL "
            "database (never superusers, replication or GRACE's own sessions)."
        ),
        "diagnosis_codes": ["database_locked"],
        "steps": [
            {
                "action": "postgres.terminate_blockers",
                "params": {"min_blocked_seconds": 5},
                "contract": [
                    {"field": "longest_block_seconds", "op": "<", "value": "{params.min_blocked_seconds}", "within": 15}
                ],
            }
        ],
        "tier": 1,
        "cooldown_seconds": 300,
    },
    {
        # A SQLite database in a rollback-journal mode is locked for every writer while anyone reads: WAL
        # mode lets readers and the writer work at once. Refused (the run ends BLOCKED, naming the processes
        # holding the file) when it is already in WAL mode, where only a writer can hold the lock.
        "name": "sqlite-locked-wal-mode",
        "description": (
            "Switch the service's locked SQLite database to WAL mode, where readers no longer block the writer "
            "(the data is untouched; rollback restores the previous journal mode). Refused, naming the processes "
            "holding the database, when it is already in WAL mode or on a network filesystem."
        ),
        "diagnosis_codes": ["database_locked"],
        "steps": [
            {
                "action": "sqlite.enable_wal",
                "contract": [
                    {"field": "journal_mode", "op": "==", "value": "wal"},
                    {"field": "busy", "op": "==", "value": False, "within": 30},
                ],
            }
        ],
        "tier": 1,
        "cooldown_seconds": 600,
    },
    {
        "name": "clear-corrupt-cache",
        "description": "Empty the service's cache directory (kept in the snapshot for rollback).",
        "diagnosis_codes": ["cache_corruption"],
        "steps": [
            {
                "action": "cache.clear",
                "contract": [
                    {"field": "exists", "op": "==", "value": True},
                    {"field": "bytes", "op": "<=", "value": "{snapshot.bytes}"},
                ],
            }
        ],
        "tier": 1,
        "cooldown_seconds": 600,
    },
    {
        # Only a cache the inventory declares for the service is ever cleared: a cache is rebuilt by its
        # owner, so one too big to snapshot is cleared without one (the only thing that frees space).
        "name": "disk-pressure-clear-caches",
        "description": (
            "Free disk space by emptying the service's declared cache directory (inventory kind cache, never "
            "any other path); one above GRACE_CACHE_SNAPSHOT_MAX_BYTES is cleared without a snapshot."
        ),
        "diagnosis_codes": ["disk_pressure"],
        "steps": [
            {
                "action": "cache.clear",
                "params": {"allow_unsnapshotted": True},
                "contract": [
                    {"field": "exists", "op": "==", "value": True},
                    {"field": "bytes", "op": "<=", "value": "{snapshot.bytes}"},
                ],
            }
        ],
        "tier": 1,
        "cooldown_seconds": 1800,
    },
    {
        "name": "restart-down-service",
        "description": "Start the service's supervised process again (systemd unit or pidfile-supervised command).",
        "diagnosis_codes": ["service_down"],
        "steps": [
            {
                "action": "service.restart",
                "contract": [{"field": "running", "op": "==", "value": True, "within": 30}],
            }
        ],
        "tier": 1,
        "cooldown_seconds": 300,
    },
    {
        # A restart clears what usually drives a sudden error spike in one process (leaked
        # connections, a poisoned in-process cache) but cuts traffic: a human approves it.
        # Raising the log level does not remedy anything, so it is no default step.
        "name": "restart-service-on-error-spike",
        "description": "Restart the erroring service (needs approval: a restart interrupts its traffic).",
        "diagnosis_codes": ["error_rate_spike"],
        "steps": [
            {
                "action": "service.restart",
                "contract": [{"field": "running", "op": "==", "value": True, "within": 30}],
            }
        ],
        "tier": 2,
        "cooldown_seconds": 900,
    },
]
