"""The coach's memory in SQLite: every review (question, time, score, answer), the FSRS card of
each question seen, and each question's rubric (key points are extracted once per question).

The database lives in the user's data directory — `$LLMLAB_COACH_DB`, else
`$XDG_DATA_HOME/llmlab/coach.sqlite`, else `~/.local/share/llmlab/coach.sqlite` — or where
`--db` says."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS reviews (
    id INTEGER PRIMARY KEY AUTOINCREMENT, question_id TEXT NOT NULL, section TEXT NOT NULL,
    answered_at TEXT NOT NULL, score INTEGER NOT NULL, rating INTEGER NOT NULL, answer TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cards (question_id TEXT PRIMARY KEY, card TEXT NOT NULL, due TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rubrics (question_id TEXT PRIMARY KEY, answer_hash TEXT NOT NULL, points TEXT NOT NULL);
"""


def default_db_path() -> Path:
    if os.environ.get("LLMLAB_COACH_DB"):
        return Path(os.environ["LLMLAB_COACH_DB"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(base) / "llmlab" / "coach.sqlite"


class History:
    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else default_db_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()  # one connection, shared by the server's threads
        self.db = sqlite3.connect(self.path, check_same_thread=False)
        self.db.executescript(SCHEMA)

    def add_review(self, question_id, section, answered_at, score, rating, answer) -> None:
        with self.lock, self.db:
            self.db.execute(
                "INSERT INTO reviews (question_id, section, answered_at, score, rating, answer) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (question_id, section, answered_at, score, rating, answer),
            )

    def card(self, question_id: str) -> str | None:
        with self.lock:
            row = self.db.execute(
                "SELECT card FROM cards WHERE question_id = ?", (question_id,)
            ).fetchone()
        return row[0] if row else None

    def save_card(self, question_id: str, card_json: str, due: str) -> None:
        with self.lock, self.db:
            self.db.execute(
                "INSERT INTO cards (question_id, card, due) VALUES (?, ?, ?) "
                "ON CONFLICT(question_id) DO UPDATE SET card = excluded.card, due = excluded.due",
                (question_id, card_json, due),
            )

    def due_dates(self) -> dict[str, str]:
        with self.lock:
            return dict(self.db.execute("SELECT question_id, due FROM cards").fetchall())

    def last_scores(self) -> dict[str, int]:
        """Each question's most recent score."""
        with self.lock:
            rows = self.db.execute(
                "SELECT question_id, score FROM reviews WHERE id IN "
                "(SELECT MAX(id) FROM reviews GROUP BY question_id)"
            ).fetchall()
        return dict(rows)

    def reviews(self, question_id: str | None = None) -> list[dict]:
        query = "SELECT question_id, section, answered_at, score, rating FROM reviews"
        args: tuple = ()
        if question_id:
            query, args = query + " WHERE question_id = ?", (question_id,)
        with self.lock:
            rows = self.db.execute(query + " ORDER BY id", args).fetchall()
        keys = ("question_id", "section", "answered_at", "score", "rating")
        return [dict(zip(keys, r)) for r in rows]

    def rubric(self, question_id: str, answer_hash: str) -> list | None:
        with self.lock:
            row = self.db.execute(
                "SELECT answer_hash, points FROM rubrics WHERE question_id = ?", (question_id,)
            ).fetchone()
        return json.loads(row[1]) if row and row[0] == answer_hash else None

    def save_rubric(self, question_id: str, answer_hash: str, points: list) -> None:
        with self.lock, self.db:
            self.db.execute(
                "INSERT INTO rubrics (question_id, answer_hash, points) VALUES (?, ?, ?) "
                "ON CONFLICT(question_id) DO UPDATE SET answer_hash = excluded.answer_hash, points = excluded.points",
                (question_id, answer_hash, json.dumps(points, ensure_ascii=False)),
            )

    def close(self) -> None:
        self.db.close()
