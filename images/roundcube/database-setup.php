#!/usr/bin/env php
<?php
/*
 * Roundcube's PostgreSQL schema, made ready before Apache starts (the
 * entrypoint runs this when the config's db_dsnw is pgsql://...):
 *
 *   1. wait until PostgreSQL accepts Roundcube's login (bounded: --wait);
 *   2. take a PostgreSQL advisory lock, so that of several replicas starting
 *      at once exactly one creates or updates the schema and the others wait;
 *   3. create the schema from SQL/postgres.initial.sql when the `system`
 *      table is missing (in one transaction: never half a schema);
 *   4. bring it up to the installed Roundcube (what bin/updatedb.sh
 *      --package=roundcube --dir=/usr/share/roundcube/SQL does);
 *   5. release the lock (also released if this process dies: it is held by
 *      the connection).
 *
 * Roundcube's own code reads the config, parses the DSN and connects, so
 * this connects exactly as Roundcube will. One line on stderr per decision;
 * the DSN and its password are never printed (PostgreSQL's error messages
 * name the host and the user, not the password).
 *
 * Usage: roundcube-database-setup [--wait=SECONDS]   (default 60)
 */

define('INSTALL_PATH', '/var/lib/roundcube/');
const SQL_DIR = '/usr/share/roundcube/SQL';
// pg_advisory_lock's key for "roundcube-authentik: Roundcube's schema"
// (any constant no other program of this database uses).
const SCHEMA_LOCK = 7231684405;
// How long a replica waits for another one's schema work.
const LOCK_WAIT = '300s';

function say(string $line): void
{
    fwrite(STDERR, "database-setup: $line\n");
}

function fail(string $line): void
{
    say($line);
    exit(1);
}

$wait = 60;
foreach (array_slice($argv, 1) as $arg) {
    if (preg_match('/^--wait=(\d+)$/', $arg, $m)) {
        $wait = (int) $m[1];
    } else {
        fail("unknown argument $arg (usage: roundcube-database-setup [--wait=SECONDS])");
    }
}

require_once INSTALL_PATH . 'program/include/clisetup.php';

$rcmail = rcmail::get_instance();
$dsnw = (string) $rcmail->config->get('db_dsnw');
if (stripos($dsnw, 'pgsql:') !== 0) {
    fail('db_dsnw is not a pgsql:// DSN; nothing to do here');
}

/** Roundcube's PostgreSQL driver, asked only for one quiet connection attempt. */
final class connection_probe extends rcube_db_pgsql
{
    /** null when PostgreSQL accepted the login and answered, else its error. */
    public function attempt(): ?string
    {
        $dsn = $this->db_dsnw_array;
        try {
            $pdo = new PDO(
                $this->dsn_string($dsn),
                $dsn['username'] ?? null,
                $dsn['password'] ?? null,
                [PDO::ATTR_TIMEOUT => 5, PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION] + $this->dsn_options($dsn)
            );
            $pdo->query('SELECT 1');
            return null;
        } catch (PDOException $e) {
            return $e->getMessage();
        }
    }

    public function where(): string
    {
        $dsn = $this->db_dsnw_array;
        return sprintf('%s@%s:%s/%s', $dsn['username'] ?? '?', $dsn['hostspec'] ?? $dsn['socket'] ?? '?',
            $dsn['port'] ?? 5432, $dsn['database'] ?? '?');
    }
}

$probe = new connection_probe($dsnw);
$where = $probe->where();
$started = microtime(true);
$deadline = $started + $wait;
$error = $probe->attempt();
if ($error !== null) {
    say("PostgreSQL ($where) does not answer yet, waiting up to {$wait}s: $error");
    while ($error !== null && microtime(true) < $deadline) {
        sleep(1);
        $error = $probe->attempt();
    }
    if ($error !== null) {
        fail("PostgreSQL ($where) did not answer within {$wait}s: $error");
    }
    say(sprintf('PostgreSQL (%s) answers after %.0fs', $where, microtime(true) - $started));
}

// From here on, Roundcube's own connection (the one bin/updatedb.sh uses);
// the lock belongs to it.
$db = rcmail_utils::db();

function one_value(rcube_db $db, string $query, ...$params): ?string
{
    $result = $db->query($query, ...$params);
    if ($db->is_error($result)) {
        fail("$query failed: " . $db->is_error());
    }
    $row = $db->fetch_array($result);
    return $row === false ? null : (string) $row[0];
}

if (one_value($db, 'SELECT pg_try_advisory_lock(?)::int', SCHEMA_LOCK) !== '1') {
    say('another replica holds the schema lock: waiting for it (at most ' . LOCK_WAIT . ')');
    one_value($db, "SET lock_timeout = '" . LOCK_WAIT . "'");
    one_value($db, 'SELECT 1 FROM pg_advisory_lock(?)', SCHEMA_LOCK);
    one_value($db, 'RESET lock_timeout');
    say('got the schema lock');
}

// Asked directly: rcube_db caches list_tables(), and db_update() below must
// see the table this may create.
if (one_value($db, 'SELECT (to_regclass(quote_ident(?)) IS NOT NULL)::int', $db->table_name('system')) !== '1') {
    $file = SQL_DIR . '/' . $db->db_provider . '.initial.sql';
    $sql = file_get_contents($file);
    if ($sql === false || $sql === '') {
        fail("cannot read $file");
    }
    $db->startTransaction();
    if (!$db->exec_script($sql)) {
        $error = $db->is_error();
        $db->rollbackTransaction();
        fail("creating the schema from $file failed (rolled back): $error");
    }
    $db->endTransaction();
    say("created the schema from $file (version " . rcmail_utils::db_version('roundcube') . ')');
}

$before = rcmail_utils::db_version('roundcube');
// As bin/updatedb.sh --package=roundcube --dir=SQL_DIR; exits non-zero on an error.
ob_start();
$updated = rcmail_utils::db_update(SQL_DIR, 'roundcube', null, ['errors' => true, 'quiet' => true]);
ob_end_clean();
if (!$updated) {
    fail('updating the schema failed');
}
$after = rcmail_utils::db_version('roundcube');
say($before === $after ? "schema is current (version $after)" : "updated the schema from version $before to $after");

one_value($db, 'SELECT pg_advisory_unlock(?)::int', SCHEMA_LOCK);
