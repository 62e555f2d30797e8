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
-- invalidations by table name without schema, as the cache does.
CREATE OR REPLACE FUNCTION pgsidecar_notify_write() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify(TG_ARGV[0], json_build_object('rels', json_build_array(TG_TABLE_NAME))::text);
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION pgsidecar_watch(tbl regclass, channel text DEFAULT 'pgsidecar_invalidate')
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format('DROP TRIGGER IF EXISTS pgsidecar_invalidate ON %s', tbl);
  EXECUTE format('CREATE TRIGGER pgsidecar_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s '
                 'FOR EACH STATEMENT EXECUTE FUNCTION pgsidecar_notify_write(%L)', tbl, channel);
END $$;

CREATE OR REPLACE FUNCTION pgsidecar_unwatch(tbl regclass) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format('DROP TRIGGER IF EXISTS pgsidecar_invalidate ON %s', tbl);
END $$;
