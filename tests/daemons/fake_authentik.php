<?php
// A stand-in for authentik's token introspection endpoint, run with the PHP
// CLI of the Roundcube test image on the test's own Docker network.
//
//   FAKE_LISTEN   tcp://0.0.0.0:9000 or tls://0.0.0.0:8443
//   FAKE_CERT     PEM certificate chain + key for tls:// (one file)
//   FAKE_CLIENT   "client_id:client_secret" expected as HTTP Basic
//   FAKE_TOKENS   JSON object: access token -> email of its user
//   FAKE_JWKS     optional: a file served (read on every request) as the JWKS
//                 at GET /application/o/<slug>/jwks/; missing file: HTTP 503
//   FAKE_API_KEY  optional: the API token the directory endpoints accept (Bearer)
//   FAKE_DIRECTORY optional: a JSON file {"users": [...], "groups": [...]} served
//                 (read on every request) at GET /api/v3/core/users/ and
//                 /api/v3/core/groups/ in authentik's paging shape, one page;
//                 `is_active=true` filters users as authentik does; a wrong
//                 token gets authentik's 403; a missing file: HTTP 503
//
// Like authentik: POST only, HTTP Basic client authentication, `token` form
// field, `{"active": false}` with HTTP 200 for anything unknown. Any other
// request (e.g. Roundcube's token request) gets the same inactive answer.
// Every request is logged to stdout as one JSON line for the test to read.

// authentik's paging answer (authentik/api/pagination.py) with everything on one page.
function directory_page(string $kind, string $query, string $authorization): array
{
    if ($authorization !== 'Bearer ' . getenv('FAKE_API_KEY')) {
        return ['403 Forbidden', json_encode(['detail' => 'Token invalid/expired'])];
    }
    $data = @file_get_contents(getenv('FAKE_DIRECTORY'));
    if ($data === false) {
        return ['503 Service Unavailable', ''];
    }
    parse_str(ltrim($query, '?'), $params);
    // Objects stay objects (an empty `attributes` must go out as {}, not []).
    $results = json_decode($data, false, 512, JSON_THROW_ON_ERROR)->$kind;
    if ($kind === 'users' && ($params['is_active'] ?? '') === 'true') {
        $results = array_values(array_filter($results, fn ($user) => $user->is_active));
    }
    $count = count($results);
    $pagination = ['next' => 0, 'previous' => 0, 'count' => $count, 'current' => 1, 'total_pages' => 1,
                   'start_index' => $count ? 1 : 0, 'end_index' => $count];
    return ['200 OK', json_encode(['pagination' => $pagination, 'results' => $results, 'autocomplete' => new stdClass()])];
}

$listen = getenv('FAKE_LISTEN');
$client = getenv('FAKE_CLIENT');
$tokens = json_decode(getenv('FAKE_TOKENS'), true, 512, JSON_THROW_ON_ERROR);
$context = stream_context_create();
if (str_starts_with($listen, 'tls://')) {
    stream_context_set_option($context, 'ssl', 'local_cert', getenv('FAKE_CERT'));
}
$server = stream_socket_server($listen, $errno, $errstr, STREAM_SERVER_BIND | STREAM_SERVER_LISTEN, $context);
if ($server === false) {
    fwrite(STDERR, "cannot listen on $listen: $errstr\n");
    exit(1);
}
fwrite(STDOUT, json_encode(['listening' => $listen]) . "\n");

while (true) {
    $conn = @stream_socket_accept($server, -1);
    if ($conn === false) {
        continue;  // e.g. a failed TLS handshake
    }
    stream_set_timeout($conn, 5);
    $head = '';
    while (!str_contains($head, "\r\n\r\n") && !feof($conn)) {
        $line = fgets($conn);
        if ($line === false) {
            break;
        }
        $head .= $line;
    }
    if (trim($head) === '') {
        fclose($conn);  // the client went away, e.g. after refusing our certificate
        continue;
    }
    [$request_line] = explode("\r\n", $head);
    $headers = [];
    foreach (array_slice(explode("\r\n", trim($head)), 1) as $line) {
        [$name, $value] = array_map('trim', explode(':', $line, 2)) + [1 => ''];
        $headers[strtolower($name)] = $value;
    }
    $body = '';
    $length = (int) ($headers['content-length'] ?? 0);
    while (strlen($body) < $length && !feof($conn)) {
        $body .= fread($conn, $length - strlen($body));
    }
    parse_str($body, $form);
    $basic = null;
    if (preg_match('/^Basic\s+(\S+)$/i', $headers['authorization'] ?? '', $m)) {
        $basic = base64_decode($m[1], true);
    }
    $token = $form['token'] ?? '';
    $answer = ['active' => false];
    if (str_starts_with($request_line, 'POST /application/o/introspect/ ')
        && $basic === $client && isset($tokens[$token])) {
        $answer = [
            'active' => true,
            'email' => $tokens[$token],
            'scope' => 'openid email offline_access dovecotprofile',
            'client_id' => explode(':', $client, 2)[0],
        ];
    }
    fwrite(STDOUT, json_encode([
        'request' => $request_line,
        'basic' => $basic,
        'token' => $token,
        'form_client_id' => $form['client_id'] ?? null,
        'active' => $answer['active'],
    ]) . "\n");
    $json = json_encode($answer);
    $status = '200 OK';
    if (preg_match('#^GET /api/v3/core/(users|groups)/(\?\S*)? #', $request_line, $api) && getenv('FAKE_DIRECTORY')) {
        [$status, $json] = directory_page($api[1], $api[2] ?? '', $headers['authorization'] ?? '');
    }
    if (preg_match('#^GET /application/o/[^/]+/jwks/ #', $request_line) && getenv('FAKE_JWKS')) {
        $jwks = @file_get_contents(getenv('FAKE_JWKS'));
        [$status, $json] = $jwks === false ? ['503 Service Unavailable', ''] : ['200 OK', $jwks];
    }
    fwrite($conn, "HTTP/1.1 $status\r\nContent-Type: application/json\r\n"
        . "Content-Length: " . strlen($json) . "\r\nConnection: close\r\n\r\n" . $json);
    fclose($conn);
}
