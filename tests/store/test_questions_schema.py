"""Acceptance 4 of the operator gate: a database written before options, multi,
deadline_at and default existed opens, keeps its rows and gains the columns."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from hyperhive.store.models import Question, open_hive_db

OLD_QUESTIONS = """
CREATE TABLE operator_questions (
    id INTEGER PRIMARY KEY,
    asker VARCHAR(64) NOT NULL,
    question TEXT NOT NULL,
    asked_at REAL NOT NULL,
    answer TEXT,
    answered_at REAL
)
"""


def test_an_old_questions_table_opens_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "hive.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute(OLD_QUESTIONS)
        conn.executemany(
            "INSERT INTO operator_questions VALUES (?, ?, ?, ?, ?, ?)",
            [(1, "m1nd", "deploy?", 10.0, "yes", 11.0), (2, "m1nd", "which db?", 12.0, None, None)],
        )
    conn.close()
    db = open_hive_db(path)
    try:
        with sqlite3.connect(path) as conn:
            cols = [r[1] for r in conn.execute("PRAGMA table_info(operator_questions)")]
        conn.close()
        assert {"options", "multi", "deadline_at", "default", "how"} <= set(cols)
        rows = {q.id: q for q in Question.select()}
        assert set(rows) == {1, 2}
        assert (rows[1].question, rows[1].answer, rows[1].answered_at) == ("deploy?", "yes", 11.0)
        assert (rows[2].options, rows[2].multi, rows[2].deadline_at, rows[2].default_answer) == (
            "[]", False, None, None)
        # New rows use every column.
        q = Question.create(asker="m1nd", question="new", asked_at=13.0, options='["a","b"]', multi=True,
                            deadline_at=20.0, default_answer="a")
        assert Question.get_by_id(q.id).default_answer == "a"
    finally:
        db.close()
