#!/bin/bash
# zonebroker: the default Linux startup script, a template for the built-in
# `default-generator`. Paste it into an AutoScale config's `startup_script` (os `linux`).
#
# Template rules: `{{name}}` is replaced by a variable; `{{{{` and `}}}}` are literal braces,
# so bash's `${{VAR}}` is written `${{{{VAR}}}}`. Values an operator supplies (credentials) are
# quoted for bash with `|sh`; the broker's own values (the check-in token, its address) are
# made of characters no shell interprets and go in as they are. A template that uses a
# credential unquoted is refused when the config is saved.
#
# Linux variables: checkin_jwt, connection_username, connection_password,
# upstream_auth_address, domain, ad_join_credential (server_id and server_hostname are
# Windows-only, as in Kasm).
#
# Environment overrides (for images and tests): ZONEBROKER_SCHEME (default https),
# ZONEBROKER_ADDRESS (default: the first address `hostname -I` reports).
set -euo pipefail

CONNECTION_USERNAME={connection_username|sh}
CONNECTION_PASSWORD={connection_password|sh}
BROKER="${{ZONEBROKER_SCHEME:-https}}://{upstream_auth_address}"

# The account RDP sessions log in with (on images that run xrdp and lack it).
if [ "$(id -u)" = 0 ] && [ -n "$CONNECTION_USERNAME" ] && ! id "$CONNECTION_USERNAME" >/dev/null 2>&1; then
  useradd --create-home --shell /bin/bash "$CONNECTION_USERNAME"
  printf '%s:%s\n' "$CONNECTION_USERNAME" "$CONNECTION_PASSWORD" | chpasswd
fi

# Check in: the server starts taking sessions. The token works once, for this server only.
ADDRESS="${{ZONEBROKER_ADDRESS:-$(hostname -I | awk '{{print $1}}')}}"
for attempt in $(seq 1 30); do
  status=$(curl -sS -o /dev/null -w '%{{http_code}}' -X POST "$BROKER/api/v1/servers/checkin" \
    -H "Authorization: Bearer {checkin_jwt}" \
    -H 'Content-Type: application/json' \
    -d "{{\"address\": \"$ADDRESS\"}}" || echo 000)
  case "$status" in
    200) echo "checked in as $ADDRESS"; exit 0 ;;
    401|422) echo "check-in refused ($status)" >&2; exit 1 ;;
    *) echo "check-in attempt $attempt: HTTP $status; retrying" >&2; sleep 10 ;;
  esac
done
echo "could not check in" >&2
exit 1
