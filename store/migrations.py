"""Schema migrations: each a named step applied once, in order, and recorded in ``_migrations``.

Add a new step at the end of ``MIGRATIONS``; never edit one that has shipped, so any old data
folder still opens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from store import fulltext

if TYPE_CHECKING:
    import sqlite_utils

Migration = Callable[["sqlite_utils.Database"], None]


def _run(db: sqlite_utils.Database, statements: list[str]) -> None:
    # Plain execute keeps the caller's transaction open (sqlite-utils' helpers would commit it).
    for sql in statements:
        db.conn.execute(sql)


def m001_core(db: sqlite_utils.Database) -> None:
    _run(db, [
        """CREATE TABLE folders (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            added_at TEXT NOT NULL DEFAULT (datetime('now')),
            is_default INTEGER NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE documents (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            folder_id INTEGER REFERENCES folders(id) ON DELETE SET NULL,
            content_hash TEXT,
            size INTEGER,
            mtime REAL,
            status TEXT NOT NULL CHECK (status IN ('pending', 'indexed', 'error')),
            error TEXT,
            chunk_count INTEGER NOT NULL DEFAULT 0,
            indexed_at TEXT,
            updated_at TEXT NOT NULL DEFAULT (datetime('now'))
        )""",
        "CREATE INDEX idx_documents_folder ON documents(folder_id)",
        "CREATE INDEX idx_documents_status ON documents(status)",
        """CREATE TABLE chunks (
            id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: ids are FAISS ids
            document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
            ord INTEGER NOT NULL,
            text TEXT NOT NULL,
            page INTEGER,
            line_start INTEGER NOT NULL,
            line_end INTEGER NOT NULL,
            char_start INTEGER NOT NULL,
            char_end INTEGER NOT NULL,
            token_count INTEGER NOT NULL,
            embedding BLOB NOT NULL,
            UNIQUE (document_id, ord)
        )""",
        """CREATE TABLE episodes (
            id INTEGER PRIMARY KEY,
            ts TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now')),
            kind TEXT NOT NULL,
            document_id INTEGER,
            conversation_id INTEGER,
            payload TEXT NOT NULL DEFAULT '{}'
        )""",
        "CREATE INDEX idx_episodes_kind ON episodes(kind, ts)",
        """CREATE TABLE jobs (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            key TEXT,
            payload TEXT NOT NULL DEFAULT '{}',
            batch_id INTEGER REFERENCES batches(id) ON DELETE SET NULL,
            status TEXT NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'running', 'done', 'failed', 'cancelled')),
            attempts INTEGER NOT NULL DEFAULT 0,
            error TEXT,
            created_at TEXT NOT NULL DEFAULT (datetime('now')),
            started_at TEXT,
            finished_at TEXT
        )""",
        "CREATE INDEX idx_jobs_status ON jobs(status, id)",
        "CREATE INDEX idx_jobs_batch ON jobs(batch_id, status)",
        "CREATE UNIQUE INDEX idx_jobs_pending_key ON jobs(kind, key) WHERE status = 'pending'",
        """CREATE TABLE batches (
            id INTEGER PRIMARY KEY,
            label TEXT NOT NULL,
            created_at TEXT NOT NULL DEFAULT (datetime('now'))
        )""",
        """CREATE TABLE playbooks (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            created_at TEXT NOT NULL DEFAULT (datetime('now')),
            content TEXT NOT NULL,
            UNIQUE (name, version)
        )""",
        """CREATE TABLE checkpoints (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            engine TEXT NOT NULL,
            path TEXT NOT NULL,
            created_at TEXT NOT NULL DEFAULT (datetime('now')),
            meta TEXT NOT NULL DEFAULT '{}'
        )""",
        """CREATE TABLE state (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        )""",
    ])


def m002_conversations(db: sqlite_utils.Database) -> None:
    _run(db, [
        """CREATE TABLE conversations (
            id INTEGER PRIMARY KEY,
            title TEXT NOT NULL,
            created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now')),
            updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now'))
        )""",
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
            content TEXT NOT NULL,
            citations TEXT NOT NULL DEFAULT '[]',
            meta TEXT NOT NULL DEFAULT '{}',
            feedback TEXT CHECK (feedback IN ('up', 'down')),
            correction TEXT,
            created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now'))
        )""",
        "CREATE INDEX idx_messages_conversation ON messages(conversation_id, id)",
        "CREATE INDEX idx_episodes_conversation ON episodes(conversation_id, ts)",
    ])


def m003_job_progress(db: sqlite_utils.Database) -> None:
    _run(db, [
        "ALTER TABLE jobs ADD COLUMN progress REAL",
        "ALTER TABLE jobs ADD COLUMN message TEXT",
    ])


def m004_playbooks(db: sqlite_utils.Database) -> None:
    """Playbooks with full history: ``playbooks`` (from 001) holds every version's snapshot, now
    with the delta that made it; the live bullets and every delta (accepted or rejected, with its
    source episode, reason and the guard's figures) get tables of their own."""
    _run(db, [
        "ALTER TABLE playbooks ADD COLUMN delta_id INTEGER",
        """CREATE TABLE playbook_bullets (
            playbook TEXT NOT NULL,
            id INTEGER NOT NULL,
            section TEXT NOT NULL,
            content TEXT NOT NULL,
            helpful INTEGER NOT NULL DEFAULT 0,
            harmful INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (playbook, id)
        )""",
        """CREATE TABLE playbook_deltas (
            id INTEGER PRIMARY KEY,
            playbook TEXT NOT NULL,
            ts TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now')),
            source TEXT NOT NULL,
            episode_id INTEGER,
            operations TEXT NOT NULL DEFAULT '[]',
            tags TEXT NOT NULL DEFAULT '[]',
            status TEXT NOT NULL CHECK (status IN ('accepted', 'rejected')),
            reason TEXT,
            changes TEXT NOT NULL DEFAULT '[]',
            figures TEXT NOT NULL DEFAULT '{}',
            version_before INTEGER,
            version_after INTEGER
        )""",
        "CREATE INDEX idx_playbook_deltas ON playbook_deltas(playbook, id)",
        "CREATE INDEX idx_playbook_deltas_episode ON playbook_deltas(episode_id)",
    ])


def m005_blobs(db: sqlite_utils.Database) -> None:
    """Named tensor files that are not checkpoints: engines' live learned state, caches."""
    _run(db, [
        """CREATE TABLE blobs (
            key TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            path TEXT NOT NULL,
            updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now')),
            meta TEXT NOT NULL DEFAULT '{}'
        )""",
    ])


MIGRATIONS: list[tuple[str, Migration]] = [
    ("001_core", m001_core),
    ("002_conversations", m002_conversations),
    ("003_job_progress", m003_job_progress),
    ("004_playbooks", m004_playbooks),
    ("005_blobs", m005_blobs),
]


def m006_ignored_files(db: sqlite_utils.Database) -> None:
    _run(db, [
        """CREATE TABLE ignored_files (
            path TEXT PRIMARY KEY,
            ignored_at TEXT NOT NULL DEFAULT (datetime('now'))
        )""",
    ])


MIGRATIONS.append(("006_ignored_files", m006_ignored_files))


def m007_drop_unused_tables(db: sqlite_utils.Database) -> None:
    """``adapters`` and ``metrics`` were never written (checkpoints and bench reports took their
    place); data folders made before this release still have them from 001."""
    _run(db, ["DROP INDEX IF EXISTS idx_metrics_name", "DROP TABLE IF EXISTS metrics",
              "DROP TABLE IF EXISTS adapters"])


MIGRATIONS.append(("007_drop_unused_tables", m007_drop_unused_tables))


def m008_chunks_fulltext(db: sqlite_utils.Database) -> None:
    """The FTS5 index of the chunks (hybrid retrieval's keyword side), its triggers, and every
    chunk already stored indexed into it."""
    fulltext.create(db.conn)
    fulltext.backfill(db.conn)


MIGRATIONS.append(("008_chunks_fulltext", m008_chunks_fulltext))


def m009_chunk_vectors_next(db: sqlite_utils.Database) -> None:
    """Vectors of the embedding model being switched to, beside the live ones (store/next_vectors)."""
    _run(db, ["""CREATE TABLE chunk_vectors_next (
        chunk_id INTEGER PRIMARY KEY REFERENCES chunks(id) ON DELETE CASCADE,
        embedding BLOB NOT NULL
    )"""])


MIGRATIONS.append(("009_chunk_vectors_next", m009_chunk_vectors_next))


def m011_cls_episodes(db: sqlite_utils.Database) -> None:
    """The CLS engine's episodic replay buffer (what each expert learned, replayed in sleep) and
    its event log (growth, pruning, sleeps kept or rolled back, each with its reason)."""
    _run(db, ["""CREATE TABLE cls_episodes (
        id INTEGER PRIMARY KEY,
        slot INTEGER NOT NULL,
        document_id INTEGER,
        kind TEXT NOT NULL,
        prompt TEXT NOT NULL,
        answer TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL DEFAULT (datetime('now'))
    )""", "CREATE INDEX idx_cls_episodes_slot ON cls_episodes(slot)",
        """CREATE TABLE cls_events (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        slot INTEGER,
        reason TEXT NOT NULL,
        figures TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL DEFAULT (datetime('now'))
    )"""])


MIGRATIONS.append(("011_cls_episodes", m011_cls_episodes))


def m012_sleep_pressure(db: sqlite_utils.Database) -> None:
    """Sleep pressure over time, per engine: its parts and their sum (store/sleep_pressure)."""
    _run(db, ["""CREATE TABLE sleep_pressure (
        id INTEGER PRIMARY KEY,
        engine TEXT NOT NULL,
        saturation REAL NOT NULL,
        novelty REAL NOT NULL,
        forgetting REAL NOT NULL,
        total REAL NOT NULL,
        figures TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL DEFAULT (datetime('now'))
    )""", "CREATE INDEX idx_sleep_pressure_engine ON sleep_pressure(engine, id)"])


MIGRATIONS.append(("012_sleep_pressure", m012_sleep_pressure))


def m013_memory_tiers(db: sqlite_utils.Database) -> None:
    """The episodic tier's turn embeddings, and the facts sleep consolidates from conversations
    into the semantic tier (each with the chunk it became, or why it is not one)."""
    _run(db, ["""CREATE TABLE turn_vectors (
        message_id INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
        embedding BLOB NOT NULL
    )""", """CREATE TABLE memory_facts (
        id INTEGER PRIMARY KEY,
        conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        sentence INTEGER NOT NULL,
        kind TEXT NOT NULL,
        importance REAL NOT NULL,
        reason TEXT NOT NULL,
        text TEXT NOT NULL,
        embedding BLOB NOT NULL,
        subject TEXT NOT NULL DEFAULT '',
        subject_embedding BLOB,
        superseded_by INTEGER REFERENCES memory_facts(id) ON DELETE SET NULL,
        forgotten INTEGER NOT NULL DEFAULT 0,
        chunk_id INTEGER REFERENCES chunks(id) ON DELETE SET NULL,
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now')),
        UNIQUE (message_id, sentence, kind)
    )""", "CREATE INDEX idx_memory_facts_conversation ON memory_facts(conversation_id)"])


MIGRATIONS.append(("013_memory_tiers", m013_memory_tiers))


def m014_controller_decisions(db: sqlite_utils.Database) -> None:
    """The meta-controller's decisions, one per answer, with the context it saw, the arm it chose
    and that arm's probability (the propensity off-policy learning needs), and the reward the
    answer earned once evaluated (self-evaluation, then the person's feedback)."""
    _run(db, ["""CREATE TABLE controller_decisions (
        id INTEGER PRIMARY KEY,
        message_id INTEGER UNIQUE REFERENCES messages(id) ON DELETE CASCADE,
        policy TEXT NOT NULL,
        arm TEXT NOT NULL,
        rules_arm TEXT NOT NULL,
        propensity REAL NOT NULL CHECK (propensity > 0 AND propensity <= 1),
        context TEXT NOT NULL,
        probabilities TEXT NOT NULL DEFAULT '{}',
        reward REAL,
        reward_parts TEXT,
        reward_source TEXT,
        learned_reward REAL,
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now')),
        rewarded_at TEXT
    )"""])


MIGRATIONS.append(("014_controller_decisions", m014_controller_decisions))


def m015_chunk_states(db: sqlite_utils.Database) -> None:
    """The hidden-state tier: each chunk's last hidden states under one model (safetensors bytes:
    the states and the chunk's token ids), deleted with the chunk."""
    _run(db, ["""CREATE TABLE chunk_states (
        chunk_id INTEGER PRIMARY KEY REFERENCES chunks(id) ON DELETE CASCADE,
        model TEXT NOT NULL,
        tokens INTEGER NOT NULL,
        tensors BLOB NOT NULL
    )"""])


MIGRATIONS.append(("015_chunk_states", m015_chunk_states))


def m016_episode_stretches(db: sqlite_utils.Database) -> None:
    """Compressed stretches of the episodic tier: consecutive old turns of one conversation, kept
    as one fixed-size vector (a summary's embedding, or the state-space encoder's state)."""
    _run(db, ["""CREATE TABLE episode_stretches (
        id INTEGER PRIMARY KEY,
        conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        first_message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        last_message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        turns INTEGER NOT NULL,
        method TEXT NOT NULL CHECK (method IN ('summary', 'ssm')),
        summary TEXT NOT NULL DEFAULT '',
        vector BLOB NOT NULL,
        said_at TEXT NOT NULL,
        seconds REAL NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now')),
        UNIQUE (first_message_id, method)
    )""", "CREATE INDEX idx_episode_stretches_conversation ON episode_stretches(conversation_id, method)"])


MIGRATIONS.append(("016_episode_stretches", m016_episode_stretches))


def m017_chunk_state_weights(db: sqlite_utils.Database) -> None:
    """The weights each chunk's hidden states were computed with (a fingerprint, see
    ``engines.hidden.fingerprint``): states of other weights are stale. Rows from before say ''
    (not known), so they count as stale and are filled again."""
    _run(db, ["ALTER TABLE chunk_states ADD COLUMN weights TEXT NOT NULL DEFAULT ''"])


MIGRATIONS.append(("017_chunk_state_weights", m017_chunk_state_weights))


def m018_chunk_windows(db: sqlite_utils.Database) -> None:
    """Each chunk's sentence-window vectors (``rag.sentence_rerank``) under the embedding
    identity that made them (safetensors bytes), deleted with the chunk."""
    _run(db, ["""CREATE TABLE chunk_windows (
        chunk_id INTEGER PRIMARY KEY REFERENCES chunks(id) ON DELETE CASCADE,
        identity TEXT NOT NULL,
        vectors BLOB NOT NULL
    )"""])


MIGRATIONS.append(("018_chunk_windows", m018_chunk_windows))
