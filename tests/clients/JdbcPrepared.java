// PostgreSQL JDBC (Debian libpostgresql-jdbc-java) through pgsidecar in transaction mode.
//
// Checks that PreparedStatements, which prepareThreshold=1 turns into named
// server-side statements from their first use, keep working while 6 connections
// in 6 threads share a small server pool: transactions (setAutoCommit(false) with
// commit and rollback), autocommit statements, a unique violation in between;
// every returned row is checked against a model. Then, after ALTER TABLE ... ADD
// COLUMN, the already prepared SELECT * returns the new column on every
// connection; after DEALLOCATE ALL the connection's statements still work.
// Connection info: PGHOST, PGPORT, PGUSER, PGDATABASE (DIRECT=1 skips the check
// that connections switched servers, for a run straight against PostgreSQL).
// Run: java -cp /usr/share/java/postgresql.jar JdbcPrepared.java; exits 0 only
// if every check passes.
import java.sql.*;
import java.util.*;
import java.util.concurrent.*;

public class JdbcPrepared {
  static final String TABLE = "drv_jdbc";
  static final int THREADS = 6, PER_THREAD = 36;   // 216 iterations in all

  static void check(Object got, Object want, String what) {
    if (!Objects.equals(got, want)) throw new AssertionError(what + ": got " + got + ", want " + want);
  }

  // All rows of the result, each a list of its columns.
  static List<List<Object>> rows(PreparedStatement ps, Object... params) throws SQLException {
    for (int i = 0; i < params.length; i++) ps.setObject(i + 1, params[i]);
    List<List<Object>> out = new ArrayList<>();
    try (ResultSet rs = ps.executeQuery()) {
      int n = rs.getMetaData().getColumnCount();
      while (rs.next()) {
        List<Object> row = new ArrayList<>();
        for (int c = 1; c <= n; c++) row.add(rs.getObject(c));
        out.add(row);
      }
    }
    return out;
  }

  static List<List<Object>> one(Object... cols) { return List.of(List.of(cols)); }

  // One connection's statements (each prepared once and reused, as applications do).
  static class Client {
    final Connection c;
    final PreparedStatement ins, get, upd, row, sum, pid;
    final Set<Integer> servers = new HashSet<>();

    Client(String url, String user) throws SQLException {
      c = DriverManager.getConnection(url, user, "");
      ins = c.prepareStatement("INSERT INTO " + TABLE + "(id, v) VALUES (?, ?)");
      get = c.prepareStatement("SELECT v FROM " + TABLE + " WHERE id = ?");
      upd = c.prepareStatement("UPDATE " + TABLE + " SET v = v + ? WHERE id = ? RETURNING v");
      row = c.prepareStatement("SELECT * FROM " + TABLE + " WHERE id = ?");
      sum = c.prepareStatement("SELECT count(*)::int, coalesce(sum(v), 0)::int FROM " + TABLE + " WHERE id BETWEEN ? AND ?");
      pid = c.prepareStatement("SELECT pg_backend_pid()");
    }

    void insert(int id, int v) throws SQLException {
      ins.setInt(1, id);
      ins.setInt(2, v);
      check(ins.executeUpdate(), 1, "insert " + id);
    }

    // Iterations of thread w on its own ids w*1000+j; model holds what they must be.
    void work(int w, Map<Integer, Integer> model) throws SQLException {
      for (int j = 0; j < PER_THREAD; j++) {
        int id = w * 1000 + j;
        String where = "thread " + w + " iter " + j;
        servers.add((Integer) rows(pid).get(0).get(0));
        if (j % 3 == 0) {            // committed transaction
          c.setAutoCommit(false);
          insert(id, j);
          check(rows(get, id), one(j), where + ": own insert in tx");
          check(rows(upd, 5, id), one(j + 5), where + ": update in tx");
          c.commit();
          c.setAutoCommit(true);
          model.put(id, j + 5);
        } else if (j % 3 == 1) {     // autocommit
          insert(id, 2 * j);
          check(rows(upd, 1, id), one(2 * j + 1), where + ": autocommit update");
          check(rows(get, id), one(2 * j + 1), where + ": read back");
          model.put(id, 2 * j + 1);
        } else {                     // rolled-back transaction, then a unique violation
          c.setAutoCommit(false);
          insert(id, -1);
          check(rows(get, id), one(-1), where + ": insert in tx");
          c.rollback();
          c.setAutoCommit(true);
          check(rows(get, id), List.of(), where + ": rolled-back row still there");
          insert(id, 3 * j);
          model.put(id, 3 * j);
          String state = null;
          try {
            insert(id, 0);
          } catch (SQLException e) {
            state = e.getSQLState();
          }
          check(state, "23505", where + ": duplicate insert");
          check(rows(get, id), one(3 * j), where + ": read after unique violation");
        }
        int n = 0, s = 0;
        for (Map.Entry<Integer, Integer> e : model.entrySet())
          if (e.getKey() / 1000 == w) { n++; s += e.getValue(); }
        check(rows(sum, w * 1000, w * 1000 + 999), one(n, s), where + ": count/sum");
      }
    }
  }

  public static void main(String[] args) throws Exception {
    String url = "jdbc:postgresql://" + System.getenv("PGHOST") + ":" + System.getenv("PGPORT") + "/"
        + System.getenv("PGDATABASE") + "?prepareThreshold=1&sslmode=disable&gssEncMode=disable";
    String user = System.getenv("PGUSER");
    try {
      run(url, user);
    } catch (Throwable e) {
      Throwable t = e.getCause() != null ? e.getCause() : e;
      StringBuilder at = new StringBuilder();
      for (StackTraceElement f : t.getStackTrace())
        if (f.getClassName().startsWith("JdbcPrepared")) at.append(at.length() > 0 ? "," : "").append(f.getLineNumber());
      System.out.println("FAIL (line " + at + "): " + t);
      System.exit(1);
    }
    System.exit(0);
  }

  static void run(String url, String user) throws Exception {
    try (Connection c = DriverManager.getConnection(url, user, ""); Statement st = c.createStatement()) {
      st.execute("DROP TABLE IF EXISTS " + TABLE);
      st.execute("CREATE TABLE " + TABLE + "(id int PRIMARY KEY, v int NOT NULL)");
    }
    List<Client> clients = new ArrayList<>();
    for (int w = 0; w < THREADS; w++) clients.add(new Client(url, user));

    Map<Integer, Integer> model = new ConcurrentHashMap<>();
    ExecutorService pool = Executors.newFixedThreadPool(THREADS);
    List<Future<?>> done = new ArrayList<>();
    for (int w = 0; w < THREADS; w++) {
      final int fw = w;
      done.add(pool.submit(() -> { clients.get(fw).work(fw, model); return null; }));
    }
    pool.shutdown();
    for (Future<?> f : done) {
      try {
        f.get(120, TimeUnit.SECONDS);
      } catch (ExecutionException e) {
        throw new Exception(e.getCause().toString(), e.getCause());
      }
    }
    for (Map.Entry<Integer, Integer> e : model.entrySet())
      check(rows(clients.get(0).get, e.getKey()), one(e.getValue()), "final row " + e.getKey());
    int maxServers = 0;
    for (Client cl : clients) maxServers = Math.max(maxServers, cl.servers.size());
    if (maxServers < 2 && System.getenv().getOrDefault("DIRECT", "").isEmpty())
      throw new AssertionError("no connection ever ran on a second server: the test proves nothing");

    // DDL: the prepared SELECT * must see the new column on every connection.
    for (Client cl : clients) check(rows(cl.row, 1), one(1, model.get(1)), "SELECT * before ALTER");
    try (Statement st = clients.get(0).c.createStatement()) {
      st.execute("ALTER TABLE " + TABLE + " ADD COLUMN extra int DEFAULT 7");
    }
    for (int n = 0; n < THREADS; n++) {
      PreparedStatement row = clients.get(n).row;
      row.setInt(1, n);
      try (ResultSet rs = row.executeQuery()) {
        ResultSetMetaData md = rs.getMetaData();
        List<String> names = new ArrayList<>();
        for (int c = 1; c <= md.getColumnCount(); c++) names.add(md.getColumnName(c));
        check(names, List.of("id", "v", "extra"), "connection " + n + ": columns after ALTER");
      }
      check(rows(row, n), one(n, model.get(n), 7), "connection " + n + ": SELECT * after ALTER");
    }

    // DEALLOCATE ALL: the driver notices and prepares its statements again.
    Client cl = clients.get(1);
    try (Statement st = cl.c.createStatement()) {
      st.execute("DEALLOCATE ALL");
    }
    for (int k = 1; k <= 3; k++) {
      check(rows(cl.get, k), one(model.get(k)), "get " + k + " after DEALLOCATE ALL");
      check(rows(cl.row, k), one(k, model.get(k), 7), "SELECT * " + k + " after DEALLOCATE ALL");
    }
    check(rows(clients.get(2).get, 4), one(model.get(4)), "other connection after DEALLOCATE ALL");

    for (Client c : clients) c.c.close();
    List<Integer> seen = new ArrayList<>();
    for (Client c : clients) seen.add(c.servers.size());
    System.out.println("OK: " + THREADS * PER_THREAD + " iterations by " + THREADS
        + " connections, servers seen per connection: " + seen);
  }
}
