<?php
/*
 * A compose attachment stored by one Roundcube replica and read by another,
 * through Roundcube's own attachment plugins (tests/daemons/test_postgres.py).
 *
 *   php attachment_store.php <plugin> <user id> <session id> put
 *       stores a small attachment as compose does, prints what the session keeps (JSON)
 *   php attachment_store.php <plugin> <user id> <session id> '<that JSON>'
 *       reads it back as sending does, prints {"data": ... or null}
 */
define('INSTALL_PATH', '/var/lib/roundcube/');
require_once INSTALL_PATH . 'program/include/clisetup.php';

[, $plugin_name, $user_id, $session_id, $what] = $argv;
$rcmail = rcmail::get_instance();
$rcmail->set_user(new rcube_user((int) $user_id));
session_id($session_id);
$_SESSION = ['user_id' => (int) $user_id];
require_once INSTALL_PATH . "plugins/$plugin_name/$plugin_name.php";
$plugin = new $plugin_name(rcube_plugin_api::get_instance());

if ($what === 'put') {
    $stored = $plugin->save(['data' => 'attachment bytes', 'name' => 'a.txt', 'group' => 'compose1', 'mimetype' => 'text/plain']);
    unset($stored['data']);  // the session keeps the id (and, on disk, the path), not the bytes
    echo json_encode($stored);
} else {
    $found = $plugin->get(json_decode($what, true));
    // As Roundcube reads an attachment when it sends: the data, else the file at path.
    $path = $found['path'] ?? null;
    $data = $found['data'] ?? ($path !== null && is_readable($path) ? file_get_contents($path) : null);
    echo json_encode(['data' => $data]);
}
