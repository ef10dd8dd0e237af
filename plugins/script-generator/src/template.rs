//! The template language, natively testable.

use zonebroker_plugin_sdk::generator::RenderErrorKind;

/// The shell a script runs in: what its unquoted words may contain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shell {
    Bash,
    PowerShell,
}

impl Shell {
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

/// Render `template` for `shell`, looking variables up with `lookup`.
pub fn render<'a>(
    shell: Shell,
    template: &str,
    lookup: impl Fn(&str) -> Option<&'a str>,
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
            out.push_str(&substitute(shell, template, at, reference, &lookup)?);
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
) -> Result<String, TemplateError> {
    let (name, filter) = match reference.split_once('|') {
        Some((name, filter)) => (name.trim(), Some(filter.trim())),
        None => (reference.trim(), None),
    };
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
        Some(other) => Err(error(
            template,
            at,
            RenderErrorKind::UnknownFilter,
            format!("`|{other}` is not a filter: use `|sh`, `|ps` or `|b64`"),
        )),
        None if value.chars().all(|c| shell.is_plain(c)) => Ok(value.to_string()),
        None => {
            let hint = match shell {
                Shell::Bash => "sh",
                Shell::PowerShell => "ps",
            };
            Err(error(
                template,
                at,
                RenderErrorKind::UnsafeValue,
                format!(
                    "the value of `{name}` has characters the shell would interpret: write `{{{name}|{hint}}}`"
                ),
            ))
        }
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
        render(Shell::Bash, template, vars)
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
        let ps = render(Shell::PowerShell, "$p = {connection_password|ps}", vars).unwrap();
        assert_eq!(ps, r#"$p = 'p@ss''w"rd $(reboot) `x`'"#);
        assert_eq!(quote_powershell("a\u{2019}b"), "'a\u{2019}\u{2019}b'");
        // A JWT, a UUID and a URL go in plain.
        assert!(bash("{checkin_jwt}").is_ok());
        assert!(render(Shell::PowerShell, "{checkin_jwt} {server_id}", vars).is_ok());
        // PowerShell is stricter than bash about plain words.
        let plain = |v: &'static str| move |_: &str| Some(v);
        assert!(render(Shell::Bash, "{x}", plain("a@b+c=d,e")).is_ok());
        assert!(render(Shell::PowerShell, "{x}", plain("a@b")).is_err());
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

    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(
            render(Shell::Bash, "{x|b64}", |_| Some("hi")).unwrap(),
            "aGk="
        );
    }
}
