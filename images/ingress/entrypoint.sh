#!/bin/sh
# Write the rendered config, refuse to start on a bad one, then run nginx in the foreground.
set -e
CONF=/etc/nginx/testbed.conf
if [ -n "$INGRESS_NGINX_CONF" ]; then
  printf '%s\n' "$INGRESS_NGINX_CONF" > "$CONF"
fi
nginx -t -q -c "$CONF"
exec nginx -c "$CONF" -g 'daemon off;'
