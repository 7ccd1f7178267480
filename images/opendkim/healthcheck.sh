#!/bin/bash
# Healthy when the milter port accepts a connection.
exec 3<>/dev/tcp/127.0.0.1/8891
