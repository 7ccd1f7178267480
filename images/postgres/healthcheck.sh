#!/bin/sh
# Healthy when the server accepts connections on its TCP port, for the role
# and database Roundcube uses (pg_hba's only host line: no failed
# authentication is logged; pg_isready sends no password).
exec pg_isready --quiet --timeout=5 --host=127.0.0.1 --port=5432 --username=roundcube --dbname=roundcube
