"""Where things live inside the containers and on the private network.

The renderers, the Dockerfiles under images/ and the Pulumi components all
agree on these names; change them here and in the Dockerfiles together.
"""

# Network aliases on the private network.
DOVECOT_HOST = "dovecot"
POSTFIX_HOST = "postfix"
ROUNDCUBE_HOST = "roundcube"
OPENDKIM_HOST = "opendkim"

# Ports inside the containers.
IMAP_PORT = 143          # Roundcube, and plain IMAP when published on loopback
IMAPS_PORT = 993         # mail clients, with TLS
LMTP_PORT = 24           # Postfix delivers here
SMTP_PORT = 25           # inbound mail
SUBMISSION_PORT = 587    # mail clients; TLS required for AUTH when tls is set
WEBMAIL_SUBMISSION_PORT = 10587  # Roundcube only: private network, never published
HTTP_PORT = 80           # Roundcube behind Apache
MILTER_PORT = 8891       # OpenDKIM's milter, asked by Postfix on the private network

# Files the program uploads. Each one's folder becomes a volume of the
# service's config carrier (components/containers.py), mounted read-only into
# the daemon, so no uploaded file may share a folder with a bind (the TLS
# files) or sit directly in /etc.
DOVECOT_CONF = "/etc/dovecot/dovecot.conf"
JWKS_SYNC_CONFIG = "/etc/dovecot/jwks-sync.json"  # token_validation: local
INTROSPECTION_FILTER_CONFIG = "/etc/dovecot/introspection-filter.json"  # token_validation: introspection
INTROSPECTION_FILTER_PORT = 8079  # on the Dovecot container's loopback only
# App passwords (clients.app_passwords): Dovecot's Lua passdb (in the image)
# asks the checker (images/dovecot/app-password-check.py) on the loopback.
APP_PASSWORD_CHECK_CONFIG = "/etc/dovecot/app-password-check.json"  # holds the client secret
APP_PASSWORD_CHECK_PORT = 8078
APP_PASSWORD_LUA = "/usr/local/lib/roundcube-authentik/app-password.lua"
POSTFIX_MAIN_CF = "/etc/postfix/main.cf"
POSTFIX_MASTER_CF = "/etc/postfix/master.cf"
ROUNDCUBE_CONFIG = "/etc/roundcube/config.inc.php"
# Served by Roundcube's web server (images/roundcube/apache-site.conf aliases them).
AUTOCONFIG_FILE = "/etc/roundcube-authentik/clients/config-v1.1.xml"
MOBILECONFIG_FILE = "/etc/roundcube-authentik/clients/mail.mobileconfig"
AUTHENTIK_CA_FILE = "/etc/roundcube-authentik/ca/authentik-ca.pem"
TLS_CERT_FILE = "/etc/roundcube-authentik/tls/cert.pem"
TLS_KEY_FILE = "/etc/roundcube-authentik/tls/key.pem"
TLS_CA_FILE = "/etc/roundcube-authentik/tls/ca.pem"  # tls.ca_file, in Roundcube
OPENDKIM_CONF = "/etc/opendkim/opendkim.conf"
OPENDKIM_UNBOUND_CONF = "/etc/opendkim/unbound.conf"  # its DNS resolver's configuration
OPENDKIM_KEY_DIR = "/etc/opendkim/keys"     # <selector>.pem, owned by the opendkim user, mode 0600
POLICYD_SPF_CONF = "/etc/postfix-policyd-spf-python/policyd-spf.conf"

# Dovecot's auth service for Postfix's SASL: a UNIX socket in a volume both
# containers mount (components/mailserver.py). Not TCP: Postfix's smtpd keeps
# its connection to the auth service across SMTP sessions and reconnects only
# when a write fails; a write to a closed UNIX socket fails (EPIPE), one to a
# closed TCP connection succeeds and the client got "454 Connection lost to
# authentication server" after every Dovecot reload or restart.
SASL_SOCKET_DIR = "/var/lib/roundcube-authentik/sasl"
SASL_SOCKET = f"{SASL_SOCKET_DIR}/auth"

# The mail directory (directory: authentik). The directory sync
# (images/postfix/directory-sync.py, its own container of the Postfix image,
# running as DIRECTORY_UID) writes Postfix's maps and Dovecot's passwd-file
# into a volume that Postfix and Dovecot mount read-only. Its folder exists in
# both images, owned by DIRECTORY_UID, so a new volume gets that owner.
DIRECTORY_DIR = "/var/lib/roundcube-authentik/directory"
DIRECTORY_SYNC_CONFIG = "/etc/roundcube-authentik/directory/sync.json"
DIRECTORY_TOKEN_FILE = "/etc/roundcube-authentik/directory/token"  # authentik API key, readable by DIRECTORY_UID only
DIRECTORY_SYNC = "/usr/local/bin/directory-sync"
# Its container runs the Postfix image with this entrypoint (no_new_privs, as every image's own).
DIRECTORY_SYNC_ENTRYPOINT = ["setpriv", "--no-new-privs", DIRECTORY_SYNC]
DIRECTORY_UID = 5020
DIRECTORY_GID = 5020
DOVECOT_USERS_FILE = f"{DIRECTORY_DIR}/dovecot-users"  # passwd-file: who exists, home, quota
DIRECTORY_JSON = f"{DIRECTORY_DIR}/directory.json"  # address -> authentik username, for the app-password checker
POSTFIX_MAILBOX_MAP = f"hash:{DIRECTORY_DIR}/mailboxes"
POSTFIX_ALIAS_MAP = f"hash:{DIRECTORY_DIR}/aliases"
POSTFIX_SENDER_MAP = f"hash:{DIRECTORY_DIR}/senders"

# Where jwks-sync.py keeps authentik's public keys for Dovecot (in the container).
OAUTH2_KEY_DIR = "/var/lib/dovecot/oauth2-keys"

# Volumes: the data that must survive every config change.
MAIL_DIR = "/var/mail"                      # Dovecot maildirs
POSTFIX_SPOOL_DIR = "/var/spool/postfix"    # queued mail
ROUNDCUBE_DB_DIR = "/var/lib/roundcube/db"  # sqlite: contacts, identities, prefs
ROUNDCUBE_DB_FILE = f"{ROUNDCUBE_DB_DIR}/roundcube.sqlite"

# The owner of the maildirs; fixed so a rebuilt image still owns old mail.
VMAIL_UID = 5000
VMAIL_GID = 5000
# Postfix's users (images/postfix pins them), so a rebuilt image still owns
# the queue folders of a kept spool volume.
POSTFIX_UID = 100
POSTFIX_GID = 101
POSTDROP_GID = 102
# PostgreSQL for several Roundcube replicas (images/postgres runs as this user).
POSTGRES_HOST = "postgres"
POSTGRES_PORT = 5432
POSTGRES_UID = 5030
POSTGRES_DATA_DIR = "/var/lib/postgresql/data"
POSTGRES_PASSWORD_FILE = "/run/secrets/roundcube-db-password"
BALANCER_HOST = "balancer"
BALANCER_CONFIG = "/etc/haproxy/haproxy.cfg"
BALANCER_UID = 5031

# The opendkim user of images/opendkim, fixed so the uploaded key's owner is known.
OPENDKIM_UID = 5010
OPENDKIM_GID = 5010


def dkim_key_file(selector: str) -> str:
    return f"{OPENDKIM_KEY_DIR}/{selector}.pem"
