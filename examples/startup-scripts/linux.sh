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
# Boot is two steps. 1. Fetch: the generator starts the rendered script with a call to
# `POST /api/v1/servers/bootstrap` (check-in token as bearer), which answers this server's
# variables once; secrets (connection_password, ad_join_credential) are read from that answer
# (`{{connection_password|sh}}` renders as `"$(zb_variable connection_password)"`) and are
# never written into the script, which any user of the VM could read from its user data.
# 2. Ready: the check-in at the end puts the server into service.
#
# Environment overrides (for images and tests): ZONEBROKER_SCHEME (default https),
# ZONEBROKER_ADDRESS (default: the first address `hostname -I` reports),
# ZONEBROKER_SKIP_SYSTEM_SETUP (set: leave accounts and the firewall alone).
set -euo pipefail

CONNECTION_USERNAME={connection_username|sh}
CONNECTION_PASSWORD={connection_password|sh}
BROKER="${{ZONEBROKER_SCHEME:-https}}://{upstream_auth_address}"

if [ "$(id -u)" = 0 ] && [ -z "${{ZONEBROKER_SKIP_SYSTEM_SETUP:-}}" ]; then
  # Only root reaches the instance metadata service (169.254.169.254): session users cannot
  # read this server's user data or its instance credentials. Applied now and, through a
  # systemd unit, at every boot (user data runs only on the first).
  cat > /usr/local/sbin/zonebroker-imds-lockdown <<'LOCKDOWN'
#!/bin/sh
if command -v iptables >/dev/null 2>&1; then
  iptables -C OUTPUT -d 169.254.169.254 -m owner ! --uid-owner 0 -j REJECT 2>/dev/null \
    || iptables -I OUTPUT -d 169.254.169.254 -m owner ! --uid-owner 0 -j REJECT
elif command -v nft >/dev/null 2>&1; then
  nft list table inet zonebroker >/dev/null 2>&1 || nft -f - <<'RULES'
table inet zonebroker {{
  chain output {{
    type filter hook output priority 0;
    ip daddr 169.254.169.254 meta skuid != 0 reject
  }}
}}
RULES
fi
LOCKDOWN
  chmod 755 /usr/local/sbin/zonebroker-imds-lockdown
  /usr/local/sbin/zonebroker-imds-lockdown
  if command -v systemctl >/dev/null 2>&1; then
    cat > /etc/systemd/system/zonebroker-imds-lockdown.service <<'UNIT'
[Unit]
Description=zonebroker: only root reaches the instance metadata service
After=network-pre.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/zonebroker-imds-lockdown

[Install]
WantedBy=multi-user.target
UNIT
    systemctl enable zonebroker-imds-lockdown.service >/dev/null 2>&1 || true
  fi
  # The account RDP sessions log in with (on images that run xrdp and lack it).
  if [ -n "$CONNECTION_USERNAME" ] && ! id "$CONNECTION_USERNAME" >/dev/null 2>&1; then
    useradd --create-home --shell /bin/bash "$CONNECTION_USERNAME"
    printf '%s:%s\n' "$CONNECTION_USERNAME" "$CONNECTION_PASSWORD" | chpasswd
  fi
fi

# Check in (ready): the server starts taking sessions. The token works once, for this server
# only, and only after the variables were fetched.
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
