//! The template language, natively testable.

use zonebroker_plugin_sdk::generator::RenderErrorKind;

/// The shell a script runs in: what its unquoted words may contain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shell {
    Bash,
    PowerShell,
}

impl Shell {
    /// The filter that quotes a value for this shell.
    fn quoting_filter(self) -> &'static str {
        match self {
            Shell::Bash => "sh",
            Shell::PowerShell => "ps",
        }
    }

    /// Whether `c` may appear in an unquoted value.
    fn is_plain(self, c: char) -> bool {
        c.is_ascii_alphanumeric()
            || matches!(c, '.' | '_' | ':' | '/' | '-')
            || (self == Shell::Bash && matches!(c, '@' | '+' | '=' | ','))
    }
}

/// A problem with a template, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateError {
    pub kind: RenderErrorKind,
    /// Byte offset.
    pub offset: usize,
    /// 1-based.
    pub line: u32,
    /// 1-based, in characters.
    pub column: u32,
    pub message: String,
}

/// What a script needs to fetch the values the host keeps out of it, when the VM boots.
#[derive(Clone, Debug, Default)]
pub struct Boot<'a> {
    /// The variables fetched at boot: secrets, whose values are not known here.
    pub secrets: Vec<&'a str>,
    /// The server's check-in token: it authorises the fetch.
    pub checkin_jwt: &'a str,
    /// Where the VM reaches the broker (`host[:port]`).
    pub broker: &'a str,
}

/// Render `template` for `shell`, looking variables up with `lookup`. With `boot`, the
/// script starts by fetching the server's variables from the broker, and each use of a
/// secret becomes code that reads the fetched value.
pub fn render<'a>(
    shell: Shell,
    template: &str,
    lookup: impl Fn(&str) -> Option<&'a str>,
    boot: Option<&Boot>,
) -> Result<String, TemplateError> {
    let body = render_body(shell, template, &lookup, boot)?;
    Ok(match boot {
        Some(boot) => with_bootstrap(shell, &body, boot),
        None => body,
    })
}

fn render_body<'a>(
    shell: Shell,
    template: &str,
    lookup: &impl Fn(&str) -> Option<&'a str>,
    boot: Option<&Boot>,
) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    let mut offset = 0;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let at = offset + i;
        let tail = &rest[i..];
        let consumed = if tail.starts_with("{{") {
            out.push('{');
            2
        } else if tail.starts_with("}}") {
            out.push('}');
            2
        } else if tail.starts_with('}') {
            return Err(error(
                template,
                at,
                RenderErrorKind::UnbalancedBrace,
                "a lone `}`: write `}}` for a literal brace".into(),
            ));
        } else {
            let Some(end) = tail.find('}') else {
                return Err(error(
                    template,
                    at,
                    RenderErrorKind::UnbalancedBrace,
                    "a `{` that is never closed: write `{{` for a literal brace".into(),
                ));
            };
            let reference = &tail[1..end];
            out.push_str(&substitute(shell, template, at, reference, lookup, boot)?);
            end + 1
        };
        rest = &tail[consumed..];
        offset = at + consumed;
    }
    out.push_str(rest);
    Ok(out)
}

fn substitute<'a>(
    shell: Shell,
    template: &str,
    at: usize,
    reference: &str,
    lookup: &impl Fn(&str) -> Option<&'a str>,
    boot: Option<&Boot>,
) -> Result<String, TemplateError> {
    let (name, filter) = match reference.split_once('|') {
        Some((name, filter)) => (name.trim(), Some(filter.trim())),
        None => (reference.trim(), None),
    };
    if boot.is_some_and(|boot| boot.secrets.contains(&name)) {
        return fetched_at_boot(shell, template, at, name, filter);
    }
    let Some(value) = lookup(name) else {
        return Err(error(
            template,
            at,
            RenderErrorKind::UnknownVariable,
            format!(
                "`{{{name}}}` is not a variable of this script (write `{{{{` and `}}}}` for literal braces)"
            ),
        ));
    };
    match filter {
        Some("sh") => Ok(quote_bash(value)),
        Some("ps") => Ok(quote_powershell(value)),
        Some("b64") => Ok(base64(value.as_bytes())),
        Some(other) => Err(unknown_filter(template, at, other)),
        None if value.chars().all(|c| shell.is_plain(c)) => Ok(value.to_string()),
        None => Err(error(
            template,
            at,
            RenderErrorKind::UnsafeValue,
            format!(
                "the value of `{name}` has characters the shell would interpret: write `{{{name}|{}}}`",
                shell.quoting_filter()
            ),
        )),
    }
}

fn unknown_filter(template: &str, at: usize, filter: &str) -> TemplateError {
    error(
        template,
        at,
        RenderErrorKind::UnknownFilter,
        format!("`|{filter}` is not a filter: use `|sh`, `|ps` or `|b64`"),
    )
}

/// The code that reads secret `name` from the variables the script fetched at boot, in the
/// shape its filter asks for. Unquoted use is refused: the value is unknown here, so nothing
/// proves it safe.
fn fetched_at_boot(
    shell: Shell,
    template: &str,
    at: usize,
    name: &str,
    filter: Option<&str>,
) -> Result<String, TemplateError> {
    let quoted_name = match shell {
        Shell::Bash => quote_bash(name),
        Shell::PowerShell => quote_powershell(name),
    };
    match (shell, filter) {
        (Shell::Bash, Some("sh")) => Ok(format!("\"$(zb_variable {quoted_name})\"")),
        (Shell::Bash, Some("b64")) => Ok(format!("\"$(zb_variable {quoted_name} b64)\"")),
        (Shell::PowerShell, Some("ps")) => Ok(format!("(Get-ZbVariable {quoted_name})")),
        (Shell::PowerShell, Some("b64")) => Ok(format!("(Get-ZbVariable {quoted_name} -Base64)")),
        (_, Some(other)) if !matches!(other, "sh" | "ps") => {
            Err(unknown_filter(template, at, other))
        }
        _ => Err(error(
            template,
            at,
            RenderErrorKind::UnsafeValue,
            format!(
                "`{name}` is a secret the VM fetches when it boots, never written into the script: quote it for this shell with `{{{name}|{}}}`",
                shell.quoting_filter()
            ),
        )),
    }
}

/// `body` with the bootstrap step first: after a `#!` line (and after a `<powershell>` line,
/// EC2's marker for PowerShell user data), else at the very top.
fn with_bootstrap(shell: Shell, body: &str, boot: &Boot) -> String {
    let mut split = 0;
    for marker in ["#!", "<powershell>"] {
        if body[split..].trim_start().starts_with(marker) {
            split += body[split..]
                .find('\n')
                .map_or(body.len() - split, |end| end + 1);
        }
    }
    let (head, tail) = body.split_at(split);
    let head = if head.is_empty() || head.ends_with('\n') {
        head.to_string()
    } else {
        format!("{head}\n")
    };
    format!("{head}{}{tail}", bootstrap_step(shell, boot))
}

/// The script's first step: fetch the server's variables from the broker, once, with its
/// check-in token (`POST /api/v1/servers/bootstrap`), and define the reader its secrets use.
/// Transient failures (no network yet, the broker restarting, a directory it waits for) are
/// retried; a refused token fails the script. `ZONEBROKER_SCHEME` overrides `https` (images
/// and tests that reach the broker over plain HTTP).
fn bootstrap_step(shell: Shell, boot: &Boot) -> String {
    let path = format!("{}/api/v1/servers/bootstrap", boot.broker);
    let authorization = format!("Authorization: Bearer {}", boot.checkin_jwt);
    match shell {
        Shell::Bash => format!(
            r#"# zonebroker: fetch this server's variables once, before anything uses them (added by
# the script generator; secrets are never written into the script itself).
ZB_VARIABLES=$(curl -sS --fail --retry 30 --retry-delay 10 --retry-connrefused -X POST   -H 'Accept: text/plain' -H {authorization}   "${{ZONEBROKER_SCHEME:-https}}://"{path})   || {{ echo "zonebroker: cannot fetch this server's variables" >&2; exit 1; }}
zb_variable() {{ # NAME [b64]: one fetched variable, decoded (or as base64)
  zb_line=$(printf '%s\n' "$ZB_VARIABLES" | grep "^$1=") \
    || {{ echo "zonebroker: no variable $1" >&2; return 1; }}
  if [ "${{2:-}}" = b64 ]; then printf '%s' "${{zb_line#*=}}"; else printf '%s' "${{zb_line#*=}}" | base64 -d; fi
}}
"#,
            authorization = quote_bash(&authorization),
            path = quote_bash(&path),
        ),
        Shell::PowerShell => format!(
            r#"# zonebroker: fetch this server's variables once, before anything uses them (added by
# the script generator; secrets are never written into the script itself).
$ZbScheme = if ($env:ZONEBROKER_SCHEME) {{ $env:ZONEBROKER_SCHEME }} else {{ 'https' }}
$ZbVariables = $null
for ($ZbAttempt = 1; $null -eq $ZbVariables; $ZbAttempt++) {{
    try {{
        $ZbVariables = Invoke-RestMethod -Method Post -Uri ($ZbScheme + '://' + {path}) `
            -Headers @{{ Authorization = {authorization} }}
    }} catch {{
        $ZbStatus = [int]$_.Exception.Response.StatusCode
        if ($ZbAttempt -ge 30 -or ($ZbStatus -ge 400 -and $ZbStatus -lt 500 -and $ZbStatus -ne 429)) {{ throw }}
        Start-Sleep -Seconds 10
    }}
}}
function Get-ZbVariable([string]$Name, [switch]$Base64) {{
    $Property = $ZbVariables.PSObject.Properties[$Name]
    if ($null -eq $Property) {{ throw "zonebroker: no variable $Name" }}
    if ($Base64) {{ [Convert]::ToBase64String([Text.Encoding]::UTF8.GetBytes([string]$Property.Value)) }}
    else {{ [string]$Property.Value }}
}}
"#,
            authorization = quote_powershell(&format!("Bearer {}", boot.checkin_jwt)),
            path = quote_powershell(&path),
        ),
    }
}

/// `'value'` for bash: nothing inside single quotes is special except `'` itself.
pub fn quote_bash(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// `'value'` for PowerShell: inside single quotes only single quotes are special, and
/// PowerShell takes the typographic ones (‘ ’ ‚ ‛) for quotes too; each is doubled.
pub fn quote_powershell(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}') {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// Standard base64 with padding.
pub use zonebroker_plugin_sdk::encoding::base64;

fn error(template: &str, offset: usize, kind: RenderErrorKind, message: String) -> TemplateError {
    let before = &template[..offset];
    let line = before.matches('\n').count() as u32 + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() as u32 + 1;
    TemplateError {
        kind,
        offset,
        line,
        column,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<&'static str> {
        match name {
            "server_id" => Some("6f1c2a3e-0000-4000-8000-000000000001"),
            "checkin_jwt" => Some("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln-_"),
            "connection_password" => Some("p@ss'w\"rd $(reboot) `x`"),
            "connection_username" => Some("kasm"),
            "empty" => Some(""),
            _ => None,
        }
    }

    fn bash(template: &str) -> Result<String, TemplateError> {
        render(Shell::Bash, template, vars, None)
    }

    #[test]
    fn variables_substitute_and_doubled_braces_are_literal() {
        assert_eq!(
            bash("id={server_id} user={connection_username}{empty}").unwrap(),
            "id=6f1c2a3e-0000-4000-8000-000000000001 user=kasm"
        );
        assert_eq!(
            bash("f() {{ echo ${{HOME}}; }}").unwrap(),
            "f() { echo ${HOME}; }"
        );
        assert_eq!(
            bash("{{{server_id}}}").unwrap(),
            "{6f1c2a3e-0000-4000-8000-000000000001}"
        );
        assert_eq!(bash("no braces at all").unwrap(), "no braces at all");
        assert_eq!(bash("").unwrap(), "");
    }

    #[test]
    fn unknown_names_and_lone_braces_are_errors_at_their_position() {
        let e = bash("echo hi\n  echo {nope}").unwrap_err();
        assert_eq!(
            (e.kind, e.line, e.column, e.offset),
            (RenderErrorKind::UnknownVariable, 2, 8, 15)
        );
        let e = bash("a }").unwrap_err();
        assert_eq!((e.kind, e.column), (RenderErrorKind::UnbalancedBrace, 3));
        let e = bash("x\ny {server_id").unwrap_err();
        assert_eq!(
            (e.kind, e.line, e.column),
            (RenderErrorKind::UnbalancedBrace, 2, 3)
        );
        let e = bash("${HOME}").unwrap_err();
        assert_eq!(
            e.kind,
            RenderErrorKind::UnknownVariable,
            "bash braces must be doubled"
        );
        let e = bash("{connection_username|upper}").unwrap_err();
        assert_eq!(e.kind, RenderErrorKind::UnknownFilter);
        let e = bash("é{nope}").unwrap_err();
        assert_eq!(
            (e.offset, e.column),
            (2, 2),
            "byte offset, character column"
        );
    }

    #[test]
    fn unsafe_values_need_quoting_and_quoting_is_tight() {
        let e = bash("PASS={connection_password}").unwrap_err();
        assert_eq!(e.kind, RenderErrorKind::UnsafeValue);
        assert!(
            e.message.contains("{connection_password|sh}"),
            "{}",
            e.message
        );
        assert_eq!(
            bash("PASS={connection_password|sh}").unwrap(),
            r#"PASS='p@ss'\''w"rd $(reboot) `x`'"#
        );
        let ps = render(
            Shell::PowerShell,
            "$p = {connection_password|ps}",
            vars,
            None,
        )
        .unwrap();
        assert_eq!(ps, r#"$p = 'p@ss''w"rd $(reboot) `x`'"#);
        assert_eq!(quote_powershell("a\u{2019}b"), "'a\u{2019}\u{2019}b'");
        // A JWT, a UUID and a URL go in plain.
        assert!(bash("{checkin_jwt}").is_ok());
        assert!(render(Shell::PowerShell, "{checkin_jwt} {server_id}", vars, None).is_ok());
        // PowerShell is stricter than bash about plain words.
        let plain = |v: &'static str| move |_: &str| Some(v);
        assert!(render(Shell::Bash, "{x}", plain("a@b+c=d,e"), None).is_ok());
        assert!(render(Shell::PowerShell, "{x}", plain("a@b"), None).is_err());
    }

    #[test]
    fn a_quoted_value_reads_back_exactly_in_bash() {
        let value = "it's $HOME `id` \"q\" \\ \n next";
        let script = format!("printf %s {}", quote_bash(value));
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(&script)
            .output()
            .expect("bash");
        assert_eq!(String::from_utf8(out.stdout).unwrap(), value);
    }

    fn boot() -> Boot<'static> {
        Boot {
            secrets: vec!["connection_password", "ad_join_credential"],
            checkin_jwt: "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln-_",
            broker: "broker.example.com:443",
        }
    }

    #[test]
    fn secrets_become_code_that_reads_them_at_boot_and_never_their_values() {
        let template =
            "#!/bin/bash\nset -eu\nPASS={connection_password|sh} B={connection_password|b64}\n";
        let script = render(Shell::Bash, template, vars, Some(&boot())).unwrap();
        assert!(!script.contains("p@ss"), "{script}");
        assert!(
            script.starts_with("#!/bin/bash\n# zonebroker: fetch"),
            "{script}"
        );
        assert!(script.ends_with(
            "set -eu\nPASS=\"$(zb_variable 'connection_password')\" B=\"$(zb_variable 'connection_password' b64)\"\n"
        ));
        assert!(
            script.contains("'Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln-_'")
        );
        assert!(script.contains("'broker.example.com:443/api/v1/servers/bootstrap'"));
        // Unquoted, a secret is refused (its value is unknown here), at its position.
        let e = render(
            Shell::Bash,
            "a\nX={connection_password}",
            vars,
            Some(&boot()),
        )
        .unwrap_err();
        assert_eq!(
            (e.kind, e.line, e.column),
            (RenderErrorKind::UnsafeValue, 2, 3)
        );
        assert!(
            e.message.contains("{connection_password|sh}"),
            "{}",
            e.message
        );
        // PowerShell: after EC2's <powershell> marker, secrets read from the fetched object.
        let ps = render(
            Shell::PowerShell,
            "<powershell>\n$p = {connection_password|ps}\n</powershell>",
            vars,
            Some(&boot()),
        )
        .unwrap();
        assert!(ps.starts_with("<powershell>\n# zonebroker: fetch"), "{ps}");
        assert!(ps.contains("$p = (Get-ZbVariable 'connection_password')\n</powershell>"));
        assert!(ps.contains("Authorization = 'Bearer eyJ"), "{ps}");
        assert!(!ps.contains("p@ss"));
        // Without a shebang the bootstrap comes first; a template using no secret gets it
        // too (the check-in needs it).
        let plain = render(Shell::Bash, "echo {server_id}", vars, Some(&boot())).unwrap();
        assert!(plain.starts_with("# zonebroker: fetch"));
        assert!(plain.ends_with("echo 6f1c2a3e-0000-4000-8000-000000000001"));
    }

    #[test]
    fn a_rendered_script_fetches_and_reads_its_secrets_exactly_in_bash() {
        let value = "it's $HOME `id` \"q\" \\ $(reboot) \n next";
        let dir = std::env::temp_dir().join(format!("zb-generator-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A stand-in for curl: records its arguments, answers as the broker does.
        let curl = dir.join("curl");
        std::fs::write(
            &curl,
            format!(
                "#!/bin/bash\nprintf '%s\\n' \"$@\" > \"$(dirname \"$0\")/args\"\nprintf 'connection_password=%s\\nconnection_username=%s\\n' {} {}\n",
                quote_bash(&base64(value.as_bytes())),
                quote_bash(&base64(b"kasm")),
            ),
        )
        .unwrap();
        std::process::Command::new("chmod")
            .arg("+x")
            .arg(&curl)
            .status()
            .unwrap();
        let template = "#!/bin/bash\nset -euo pipefail\nPASS={connection_password|sh}\nprintf '%s|%s' \"$PASS\" {connection_password|b64}\n";
        let script = render(Shell::Bash, template, vars, Some(&boot())).unwrap();
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(&script)
            .env(
                "PATH",
                format!("{}:{}", dir.display(), std::env::var("PATH").unwrap()),
            )
            .env("ZONEBROKER_SCHEME", "http")
            .output()
            .expect("bash");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            format!("{value}|{}", base64(value.as_bytes()))
        );
        // The bootstrap step is POSIX sh too (Debian's dash), for templates that ask for it.
        let posix = render(
            Shell::Bash,
            "#!/bin/sh\nset -eu\nPASS={connection_password|sh}\nprintf '%s' \"$PASS\"\n",
            vars,
            Some(&boot()),
        )
        .unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&posix)
            .env("ZONEBROKER_SCHEME", "http")
            .env(
                "PATH",
                format!("{}:{}", dir.display(), std::env::var("PATH").unwrap()),
            )
            .output()
            .expect("sh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8(out.stdout).unwrap(), value);
        let args = std::fs::read_to_string(dir.join("args")).unwrap();
        assert!(
            args.contains("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln-_\n"),
            "{args}"
        );
        assert!(
            args.contains("http://broker.example.com:443/api/v1/servers/bootstrap\n"),
            "{args}"
        );
        // A variable the broker did not answer fails the script.
        let missing = render(
            Shell::Bash,
            "#!/bin/bash\nset -eu\nX={ad_join_credential|sh}\necho reached",
            vars,
            Some(&boot()),
        )
        .unwrap();
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(&missing)
            .env(
                "PATH",
                format!("{}:{}", dir.display(), std::env::var("PATH").unwrap()),
            )
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(!String::from_utf8_lossy(&out.stdout).contains("reached"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(
            render(Shell::Bash, "{x|b64}", |_| Some("hi"), None).unwrap(),
            "aGk="
        );
    }
}
