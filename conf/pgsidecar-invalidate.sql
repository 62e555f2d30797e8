-- Result-cache invalidation for writes that do not pass through any pgsidecar
-- (cron jobs, psql sessions, other services). Run once per database, as a role
-- that may create functions and triggers:
--     psql -d app -f /usr/share/pgsidecar/pgsidecar-invalidate.sql
-- then, for each table whose cached reads must see such writes:
--     SELECT pgsidecar_watch('public.orders');
--     SELECT pgsidecar_unwatch('public.orders');   -- to stop
-- A statement-level trigger sends one NOTIFY per writing statement (not per row)
-- on the channel every sidecar LISTENs on (cache.invalidation_channel, default
-- pgsidecar_invalidate); NOTIFY is delivered at commit, so a sidecar drops the
-- table's entries right after the write becomes visible. Sidecars key
-- invalidations by table name without schema, as the cache does, and add what a
-- table reaches from their catalog (its inheritance tree, views over it).
-- pgsidecar_watch() puts the trigger on the table and on every partition or
-- inheritance child it has now (a write straight to a partition changes what its
-- parent reads); run it again after adding partitions.
CREATE OR REPLACE FUNCTION pgsidecar_notify_write() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify(TG_ARGV[0], json_build_object('rels', (
    WITH RECURSIVE up(oid) AS (
      SELECT TG_RELID
      UNION SELECT i.inhparent FROM pg_inherits i JOIN up ON i.inhrelid = up.oid)
    SELECT json_agg(DISTINCT c.relname) FROM pg_class c JOIN up ON c.oid = up.oid))::text);
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION pgsidecar_watch(tbl regclass, channel text DEFAULT 'pgsidecar_invalidate')
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  t regclass;
BEGIN
  FOR t IN WITH RECURSIVE down(oid) AS (
             SELECT tbl::oid
             UNION SELECT i.inhrelid FROM pg_inherits i JOIN down ON i.inhparent = down.oid)
           SELECT c.oid::regclass FROM pg_class c JOIN down ON c.oid = down.oid WHERE c.relkind IN ('r', 'p')
  LOOP
    EXECUTE format('DROP TRIGGER IF EXISTS pgsidecar_invalidate ON %s', t);
    EXECUTE format('CREATE TRIGGER pgsidecar_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION pgsidecar_notify_write(%L)', t, channel);
  END LOOP;
END $$;

CREATE OR REPLACE FUNCTION pgsidecar_unwatch(tbl regclass) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  t regclass;
BEGIN
  FOR t IN WITH RECURSIVE down(oid) AS (
             SELECT tbl::oid
             UNION SELECT i.inhrelid FROM pg_inherits i JOIN down ON i.inhparent = down.oid)
           SELECT oid::regclass FROM down
  LOOP
    EXECUTE format('DROP TRIGGER IF EXISTS pgsidecar_invalidate ON %s', t);
  END LOOP;
END $$;
