# zonebroker: the default Windows startup script, a template for the built-in
# `default-generator`. Paste it into an AutoScale config's `startup_script` (os `windows`);
# cloud providers run it at first boot (EC2: wrap it in <powershell></powershell>).
#
# Template rules: `{{name}}` is replaced by a variable; `{{{{` and `}}}}` are literal braces,
# so every PowerShell script block and hashtable below doubles its braces. Values an operator
# or the directory supplies are quoted for PowerShell with `|ps`; the broker's own values
# (the check-in token, ids, host name, address) go in as they are.
#
# Windows variables: checkin_jwt, connection_username, connection_password, server_id,
# server_hostname, upstream_auth_address, domain, ad_join_credential.
#
# Boot is two steps. 1. Fetch: the generator starts the rendered script with a call to
# `POST /api/v1/servers/bootstrap` (check-in token as bearer), which answers this server's
# variables once; secrets (connection_password, ad_join_credential) are read from that answer
# (`{{connection_password|ps}}` renders as `(Get-ZbVariable 'connection_password')`) and are
# never written into the script, which any user of the VM could read from its user data.
# 2. Ready: the check-in at the end puts the server into service.
#
# Active Directory: when the AutoScale config has `create_ad_computer_record`, the broker
# pre-creates the computer account named by `server_hostname` in the configured OU before the
# VM exists; the bootstrap sets its single-use password and answers it as `ad_join_credential`
# (never stored, never in the user data), with the directory's DNS `domain`. The machine then
# joins with an unsecured join of that pre-created account (no domain administrator
# credentials on the VM). Without AD, both are empty and the join is skipped.
$ErrorActionPreference = 'Stop'

# Only SYSTEM and administrators reach the instance metadata service (169.254.169.254):
# session users cannot read this server's user data or its instance credentials.
if (-not (Get-NetFirewallRule -Name 'zonebroker-imds' -ErrorAction SilentlyContinue)) {{
    New-NetFirewallRule -Name 'zonebroker-imds' -DisplayName 'Instance metadata: SYSTEM and administrators only' `
        -Direction Outbound -Action Block -RemoteAddress 169.254.169.254 `
        -LocalUser 'O:LSD:(D;;CC;;;SY)(D;;CC;;;BA)(A;;CC;;;WD)' | Out-Null
}}

$Username = {connection_username|ps}
$Password = {connection_password|ps}
$Domain = {domain|ps}
$JoinCredential = {ad_join_credential|ps}
$Broker = "https://{upstream_auth_address}"

# Remote Desktop on, through the firewall.
Set-ItemProperty -Path 'HKLM:\System\CurrentControlSet\Control\Terminal Server' -Name fDenyTSConnections -Value 0
Enable-NetFirewallRule -DisplayGroup 'Remote Desktop'

# The account sessions log in with.
if ($Username -and -not (Get-LocalUser -Name $Username -ErrorAction SilentlyContinue)) {{
    $Secure = ConvertTo-SecureString $Password -AsPlainText -Force
    New-LocalUser -Name $Username -Password $Secure -PasswordNeverExpires | Out-Null
    Add-LocalGroupMember -Group 'Remote Desktop Users' -Member $Username
}}

# Join the domain with the pre-created computer account, under the broker's host name.
if ($Domain -and $JoinCredential) {{
    $Secure = ConvertTo-SecureString $JoinCredential -AsPlainText -Force
    $Credential = New-Object System.Management.Automation.PSCredential('unused', $Secure)
    Add-Computer -DomainName $Domain -NewName '{server_hostname}' -Credential $Credential `
        -Options UnsecuredJoin, PasswordPass, JoinWithNewName -Force
}} elseif ($env:COMPUTERNAME -ne '{server_hostname}') {{
    Rename-Computer -NewName '{server_hostname}' -Force
}}

# Check in (ready): server {server_id} starts taking sessions. The token works once, and only
# after the variables were fetched.
$Address = (Get-NetIPAddress -AddressFamily IPv4 |
    Where-Object {{ $_.InterfaceAlias -notlike 'Loopback*' }} |
    Select-Object -First 1).IPAddress
$Body = @{{ address = $Address }} | ConvertTo-Json
for ($Attempt = 1; $Attempt -le 30; $Attempt++) {{
    try {{
        Invoke-RestMethod -Method Post -Uri "$Broker/api/v1/servers/checkin" `
            -Headers @{{ Authorization = 'Bearer {checkin_jwt}' }} `
            -ContentType 'application/json' -Body $Body | Out-Null
        break
    }} catch {{
        Start-Sleep -Seconds 10
    }}
}}

# The domain join takes effect after a restart.
if ($Domain -and $JoinCredential) {{ Restart-Computer -Force }}
