"""test_store_integrity.py - issue 18 finding 9: the tracking store checks itself on open.

A real tracked `train` run fills a store; the test then damages it (pages that nothing owns,
counted in the header: reads still work) and checks, with Python's sqlite3 as the outside
reference (PRAGMA integrity_check fails), that loratune
  - still lists and shows the runs, with a warning naming store.db and SQLite's complaint,
  - refuses to write: `runs delete` fails with a message saying how to recover, and a tracked
    `train` says it is not tracked (why, how to recover); store.db is byte-identical after.
Then a store with user_version 0 that already holds a table is migrated, and the pre-migration
copy store.db.v0.bak holds what the database held before.
"""
import hashlib
import os
import shutil
import sqlite3
import struct
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ltcheck  # noqa: E402
from ltcheck import check  # noqa: E402

MODEL = os.path.join(ltcheck.FIXTURES, "stories260K", "stories260K.gguf")
DATA = os.path.join(ltcheck.FIXTURES, "datasets", "wikisql-mlx", "train.jsonl")
TRAIN = ["train", "--model", MODEL, "--iters", "2", "--batch-size", "2", "--max-seq-len", "64",
         "--threads", "1", "--data", "data.jsonl"]


def sha(p):
    return hashlib.sha256(open(p, "rb").read()).hexdigest()


def add_orphan_pages(db, n=3):
    """Appends n pages that no b-tree or freelist owns and counts them in the header's page
    count: reads still work, SQLite's checks report the pages as never used."""
    c = sqlite3.connect(db)
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = c.execute("PRAGMA page_size").fetchone()[0]
    pages = c.execute("PRAGMA page_count").fetchone()[0]
    c.close()
    with open(db, "r+b") as f:
        f.seek(28)
        f.write(struct.pack(">I", pages + n))
        f.seek(pages * page_size)
        f.write(b"\0" * (page_size * n))
    return pages


def main():
    tmp = tempfile.mkdtemp(prefix="lt_store_")
    try:
        with open(DATA) as f:
            lines = f.readlines()[:20]
        with open(os.path.join(tmp, "data.jsonl"), "w") as f:
            f.writelines(lines)
        r = ltcheck.run(*TRAIN, "--out", "out_a", "--run-name", "a", cwd=tmp)
        check(r.returncode == 0, f"train a: {r.stderr[-1500:]}")
        db = os.path.join(tmp, ".loratune", "store.db")
        r = ltcheck.run("runs", "list", cwd=tmp)
        check(r.returncode == 0 and "damaged" not in r.stderr, f"healthy store: {r.stderr}")

        add_orphan_pages(db)
        c = sqlite3.connect(db)
        try:
            ref = c.execute("PRAGMA integrity_check").fetchall()
        except sqlite3.DatabaseError as e:
            ref = [(str(e),)]
        c.close()
        check(ref != [("ok",)], f"sqlite3 (Python) sees the damage: {ref[:3]}")
        before = sha(db)

        r = ltcheck.run("runs", "list", cwd=tmp)
        check(r.returncode == 0 and "a" in r.stdout, f"a damaged store is still listed: {r.stderr}")
        check("store.db is damaged" in r.stderr and "quick_check" in r.stderr
              and ".recover" in r.stderr, f"runs list warns: {r.stderr}")
        r = ltcheck.run("runs", "delete", "a", cwd=tmp)
        check(r.returncode != 0 and "damaged" in r.stderr and "writes are refused" in r.stderr
              and ".recover" in r.stderr, f"runs delete is refused with how to recover: "
              f"rc {r.returncode}: {r.stderr}")
        r = ltcheck.run(*TRAIN, "--out", "out_b", "--run-name", "b", cwd=tmp)
        check("not tracked" in r.stderr and "damaged" in r.stderr and ".recover" in r.stderr,
              f"train says the run is not tracked and why: {r.stderr[-1500:]}")
        check(sha(db) == before, "store.db is unchanged after the refused writes")

        # migration backup: a version-0 database that already holds something
        mig = os.path.join(tmp, "old")
        os.makedirs(mig)
        c = sqlite3.connect(os.path.join(mig, "store.db"))
        c.execute("CREATE TABLE keep(x TEXT)")
        c.execute("INSERT INTO keep VALUES ('precious')")
        c.commit()
        c.close()
        r = ltcheck.run("runs", "list", "--store", mig, cwd=tmp)
        check(r.returncode == 0, f"runs list migrates the old store: {r.stderr}")
        bak = os.path.join(mig, "store.db.v0.bak")
        check(os.path.exists(bak), f"pre-migration backup {bak} exists: {os.listdir(mig)}")
        if os.path.exists(bak):
            c = sqlite3.connect(bak)
            check(c.execute("PRAGMA user_version").fetchone()[0] == 0, "backup is at version 0")
            check(c.execute("SELECT x FROM keep").fetchall() == [("precious",)],
                  "backup holds the old rows")
            names = {n for (n,) in c.execute("SELECT name FROM sqlite_master")}
            check("runs" not in names, f"backup is the old schema: {names}")
            c.close()
        c = sqlite3.connect(os.path.join(mig, "store.db"))
        check(c.execute("PRAGMA user_version").fetchone()[0] >= 1, "the store itself migrated")
        c.close()
        # a fresh store has nothing to back up
        r = ltcheck.run("runs", "list", "--store", os.path.join(tmp, "fresh"), cwd=tmp)
        check(r.returncode == 0 and not [p for p in os.listdir(os.path.join(tmp, "fresh"))
                                         if p.endswith(".bak")], "no backup of an empty store")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ltcheck.finish()


if __name__ == "__main__":
    sys.exit(main())
