// node-postgres (npm "pg") through pgsidecar in transaction mode.
//
// Checks that named queries ({name, text, values}: Parse once per client, then
// Bind/Execute) keep working while a Pool of 6 clients runs 6 concurrent workers
// over a small server pool: transactions with BEGIN/COMMIT and BEGIN/ROLLBACK on a
// checked-out client (which must not wait for another client: with 2 servers that
// could deadlock), autocommit named queries through pool.query, a unique
// violation in between; every returned row is checked against a model. Then,
// after ALTER TABLE ... ADD COLUMN (simple query), the already prepared named
// SELECT * returns the new column on every client. Connection info: PGHOST,
// PGPORT, PGUSER, PGDATABASE (DIRECT=1 skips the check that clients switched
// servers, for a run straight against PostgreSQL). Exits 0 only if every check
// passes.
'use strict';
const { Pool } = require('pg');
const assert = require('assert');

const TABLE = 'drv_node';
const WORKERS = 6;
const PER_WORKER = 36;   // 216 iterations in all

const q = {
  ins: (id, v) => ({ name: 'ins', text: `INSERT INTO ${TABLE}(id, v) VALUES ($1, $2)`, values: [id, v] }),
  get: (id) => ({ name: 'get', text: `SELECT v FROM ${TABLE} WHERE id = $1`, values: [id] }),
  upd: (id, d) => ({ name: 'upd', text: `UPDATE ${TABLE} SET v = v + $2 WHERE id = $1 RETURNING v`, values: [id, d] }),
  row: (id) => ({ name: 'row', text: `SELECT * FROM ${TABLE} WHERE id = $1`, values: [id] }),
  sum: (lo, hi) => ({ name: 'sum', text: `SELECT count(*)::int AS n, coalesce(sum(v), 0)::int AS s FROM ${TABLE} WHERE id BETWEEN $1 AND $2`, values: [lo, hi] }),
  pid: () => ({ name: 'pid', text: 'SELECT pg_backend_pid() AS pid' }),
};

function fail(msg) {
  console.log(`FAIL: ${msg}`);
  process.exit(1);
}

function check(got, want, what) {
  try {
    assert.deepStrictEqual(got, want);
  } catch (e) {
    fail(`${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
  }
}

const pool = new Pool({ max: WORKERS, idleTimeoutMillis: 0 });
pool.on('error', (e) => fail(`idle client error: ${e.message}`));
const model = new Map();      // id -> v
const servers = new Map();    // client (pgsidecar's BackendKeyData pid) -> Set of backend pids

async function inTx(fn) {
  const c = await pool.connect();
  try {
    const pid = (await c.query(q.pid())).rows[0].pid;
    if (!servers.has(c.processID)) servers.set(c.processID, new Set());
    servers.get(c.processID).add(pid);
    await c.query('BEGIN');
    await fn(c);
  } finally {
    c.release();
  }
}

async function worker(w) {
  for (let j = 0; j < PER_WORKER; j++) {
    const id = w * 1000 + j;
    const where = `worker ${w} iter ${j}`;
    if (j % 3 === 0) {            // committed transaction
      await inTx(async (c) => {
        await c.query(q.ins(id, j));
        check((await c.query(q.get(id))).rows, [{ v: j }], `${where}: own insert in tx`);
        check((await c.query(q.upd(id, 5))).rows, [{ v: j + 5 }], `${where}: update in tx`);
        await c.query('COMMIT');
      });
      model.set(id, j + 5);
    } else if (j % 3 === 1) {     // autocommit through the pool
      await pool.query(q.ins(id, 2 * j));
      check((await pool.query(q.upd(id, 1))).rows, [{ v: 2 * j + 1 }], `${where}: autocommit update`);
      check((await pool.query(q.get(id))).rows, [{ v: 2 * j + 1 }], `${where}: read back`);
      model.set(id, 2 * j + 1);
    } else {                      // rolled-back transaction, then a unique violation
      await inTx(async (c) => {
        await c.query(q.ins(id, -1));
        check((await c.query(q.get(id))).rows, [{ v: -1 }], `${where}: insert in tx`);
        await c.query('ROLLBACK');
      });
      check((await pool.query(q.get(id))).rows, [], `${where}: rolled-back row still there`);
      await pool.query(q.ins(id, 3 * j));
      model.set(id, 3 * j);
      const dup = await pool.query(q.ins(id, 0)).then(() => null, (e) => e.code);
      check(dup, '23505', `${where}: duplicate insert`);
      check((await pool.query(q.get(id))).rows, [{ v: 3 * j }], `${where}: read after unique violation`);
    }
    const mine = [...model].filter(([k]) => Math.floor(k / 1000) === w);
    check((await pool.query(q.sum(w * 1000, w * 1000 + 999))).rows,
      [{ n: mine.length, s: mine.reduce((a, [, v]) => a + v, 0) }], `${where}: count/sum`);
  }
}

async function main() {
  await pool.query(`DROP TABLE IF EXISTS ${TABLE}`);
  await pool.query(`CREATE TABLE ${TABLE}(id int PRIMARY KEY, v int NOT NULL)`);
  await Promise.all([...Array(WORKERS).keys()].map(worker));

  for (const [id, v] of model) check((await pool.query(q.get(id))).rows, [{ v }], `final row ${id}`);
  const seen = [...servers.values()].map((s) => s.size);
  if (Math.max(...seen) < 2 && !process.env.DIRECT) fail(`no client ever ran on a second server (${seen})`);

  // DDL: the prepared SELECT * must see the new column on every client.
  const clients = await Promise.all([...Array(WORKERS).keys()].map(() => pool.connect()));
  for (const c of clients) check((await c.query(q.row(1))).rows, [{ id: 1, v: model.get(1) }], 'SELECT * before ALTER');
  for (const c of clients) c.release();
  await pool.query(`ALTER TABLE ${TABLE} ADD COLUMN extra int DEFAULT 7`);
  const again = await Promise.all([...Array(WORKERS).keys()].map(() => pool.connect()));
  for (const [n, c] of again.entries()) {
    const r = await c.query(q.row(n + 1));
    check(r.fields.map((f) => f.name), ['id', 'v', 'extra'], `client ${n}: columns after ALTER`);
    check(r.rows, [{ id: n + 1, v: model.get(n + 1), extra: 7 }], `client ${n}: SELECT * after ALTER`);
  }
  for (const c of again) c.release();
  await pool.end();
  // pg-pool replaces a client whose query failed, hence more clients than workers.
  console.log(`OK: ${WORKERS * PER_WORKER} iterations by ${WORKERS} workers on ${seen.length} clients, ` +
    `${seen.filter((n) => n > 1).length} of them ran on 2 servers`);
}

main().catch((e) => fail(`unexpected error ${e.code || ''}: ${e.stack || e}`));
