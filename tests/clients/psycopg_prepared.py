#!/usr/bin/python3
"""psycopg 3 (Debian python3-psycopg) through pgsidecar in transaction mode.

Checks that server-side prepared statements (prepare_threshold=0: every query is
a named statement from its first use) keep working while 6 connections share a
small server pool: prepared INSERT/SELECT/UPDATE in explicit transactions
(committed and rolled back) and in autocommit, with a unique violation in
between; every returned row is checked against a model. psycopg itself sends
DEALLOCATE ALL after every ROLLBACK and DROP. Then, after ALTER TABLE ... ADD
COLUMN, the already prepared SELECT * returns the new column on every
connection; after DEALLOCATE ALL on one connection, new statements work there
and the other connections' statements still work.

Connection info: PGHOST, PGPORT, PGUSER, PGDATABASE (DIRECT=1 skips the check
that connections switched servers, for a run straight against PostgreSQL).
Exits 0 only if every check passes.
"""
import os
import sys
import traceback

import psycopg
from psycopg import errors

TABLE = "drv_py"
N_CONN = 6
ITERATIONS = 200

INS = f"INSERT INTO {TABLE}(id, v) VALUES (%s, %s)"
GET = f"SELECT v FROM {TABLE} WHERE id = %s"
UPD = f"UPDATE {TABLE} SET v = v + %s WHERE id = %s RETURNING v"
ROW = f"SELECT * FROM {TABLE} WHERE id = %s"
PID = "SELECT pg_backend_pid()"
SUM = f"SELECT count(*), coalesce(sum(v), 0) FROM {TABLE}"


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def check(got, want, what):
    if got != want:
        fail(f"{what}: got {got!r}, want {want!r}")


def rows(conn, sql, params=()):
    return conn.execute(sql, params, prepare=True).fetchall()


def main():
    # Libpq takes host, port, user and dbname from the PG* environment variables.
    conns = [psycopg.connect("", autocommit=True, prepare_threshold=0) for _ in range(N_CONN)]
    conns[0].execute(f"DROP TABLE IF EXISTS {TABLE}")
    conns[0].execute(f"CREATE TABLE {TABLE}(id int PRIMARY KEY, v int NOT NULL)")

    model = {}          # id -> v: what the table must hold
    pids = [set() for _ in conns]   # server backends each connection ran on
    for i in range(ITERATIONS):
        # a and b always differ; while a holds a server in a transaction, b's
        # autocommit statements must run on the other one.
        ai, bi = i % N_CONN, (5 * i + 1) % N_CONN
        a, b = conns[ai], conns[bi]
        pids[ai].add(rows(a, PID)[0][0])
        if i % 3 == 0:      # committed transaction on a, interleaved with b
            with a.transaction():
                a.execute(INS, (i, i * 10), prepare=True)
                check(rows(a, GET, (i,)), [(i * 10,)], f"iter {i}: own insert in tx")
                check(rows(b, GET, (i,)), [], f"iter {i}: uncommitted row visible to other conn")
                pids[bi].add(rows(b, PID)[0][0])   # necessarily not a's server
                if i >= 3:
                    check(rows(b, UPD, (1, i - 3)), [(model[i - 3] + 1,)], f"iter {i}: update by b")
                    model[i - 3] += 1
                check(rows(a, UPD, (5, i)), [(i * 10 + 5,)], f"iter {i}: update in tx")
            model[i] = i * 10 + 5
        elif i % 3 == 1:    # autocommit on both
            a.execute(INS, (i, i), prepare=True)
            model[i] = i
            check(rows(b, UPD, (2, i)), [(i + 2,)], f"iter {i}: autocommit update")
            model[i] += 2
            check(rows(a, GET, (i,)), [(i + 2,)], f"iter {i}: read back")
        else:               # rolled-back transaction, then a unique violation
            with a.transaction(force_rollback=True):
                a.execute(INS, (i, -1), prepare=True)
                check(rows(a, GET, (i,)), [(-1,)], f"iter {i}: insert in rolled-back tx")
            check(rows(b, GET, (i,)), [], f"iter {i}: rolled-back row still there")
            b.execute(INS, (i, 7 * i), prepare=True)
            model[i] = 7 * i
            try:
                a.execute(INS, (i, 0), prepare=True)
                fail(f"iter {i}: duplicate insert succeeded")
            except errors.UniqueViolation:
                pass
            check(rows(a, GET, (i,)), [(7 * i,)], f"iter {i}: read after unique violation")
        check(rows(conns[(i + 3) % N_CONN], SUM), [(len(model), sum(model.values()))], f"iter {i}: count/sum")

    for k, v in model.items():
        check(rows(conns[k % N_CONN], GET, (k,)), [(v,)], f"final row {k}")
    if max(len(p) for p in pids) < 2 and not os.environ.get("DIRECT"):
        fail(f"no connection ever ran on a second server (pids {pids}): the test proves nothing")

    # DDL: the prepared SELECT * must see the new column on every connection.
    for n, c in enumerate(conns):
        check(rows(c, ROW, (n,)), [(n, model[n])], f"conn {n}: SELECT * before ALTER")
    conns[0].execute(f"ALTER TABLE {TABLE} ADD COLUMN extra int DEFAULT 7", prepare=False)
    for n, c in enumerate(conns):
        cur = c.execute(ROW, (n,), prepare=True)
        check([d.name for d in cur.description], ["id", "v", "extra"], f"conn {n}: columns after ALTER")
        check(cur.fetchall(), [(n, model[n], 7)], f"conn {n}: SELECT * after ALTER")

    # DEALLOCATE ALL (simple query): as on PostgreSQL, this connection's statements
    # are gone; psycopg 3.1 does not notice, so running a known query again may
    # fail with 26000 (a newer psycopg may prepare it again). New statements work,
    # and other connections' statements of the same text still work on both
    # servers (one holds a transaction so that the other runs on the second one).
    c = conns[1]
    c.execute("DEALLOCATE ALL", prepare=False)
    try:
        check(rows(c, GET, (1,)), [(model[1],)], "known query after DEALLOCATE ALL")
    except errors.InvalidSqlStatementName:
        pass
    check(rows(c, GET + " AND v IS NOT NULL", (2,)), [(model[2],)], "new statement after DEALLOCATE ALL")
    for k in (2, 3, 4):
        with conns[k].transaction():
            check(rows(conns[k], GET, (k,)), [(model[k],)], f"conn {k} in tx after DEALLOCATE ALL")
            check(rows(conns[k + 1], ROW, (k,)), [(k, model[k], 7)], f"conn {k + 1} after DEALLOCATE ALL")

    for c in conns:
        c.close()
    print(f"OK: {ITERATIONS} iterations on {N_CONN} connections, "
          f"servers seen per connection: {[len(p) for p in pids]}")


if __name__ == "__main__":
    try:
        main()
    except psycopg.Error as e:
        line = ",".join(str(f.lineno) for f in traceback.extract_tb(e.__traceback__) if f.filename == __file__)
        fail(f"line {line}: unexpected {type(e).__name__} (SQLSTATE {e.sqlstate}): {e}")
