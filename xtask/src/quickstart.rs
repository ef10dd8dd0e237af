//! `cargo xtask quickstart`: README.md's "Quickstart for operators", run as an operator would
//! paste it, so a quickstart that no longer works fails the build.
//!
//! The section's first `sh` block (its exports and the `cargo xtask run -- serve ...` line)
//! starts the server in a fresh directory, exactly as written. Every later block runs in one
//! bash, command by command, with `zb` being the built binary (on the `PATH`, so that a
//! `zb ... &` is the server's own process); a command's trailing comment is its promise:
//! `# error: ...` must fail, and every `"key": "value"` in a comment must be in its output.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SECTION: &str = "## Quickstart for operators";

pub fn run(root: &Path) -> Result<(), String> {
    let readme = std::fs::read_to_string(root.join("README.md"))
        .map_err(|e| format!("reading README.md: {e}"))?;
    let blocks = shell_blocks(&readme)?;
    let (start, rest) = blocks
        .split_first()
        .ok_or("the quickstart has no sh block")?;
    let dir = std::env::temp_dir().join(format!("zonebroker-quickstart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let binary = super::target_dir().join("release").join("zonebroker");

    eprintln!(
        "xtask quickstart: starting the server as the README does, in {}",
        dir.display()
    );
    let mut server = Server::start(start, root, &dir)?;
    let result = wait_until_up(&mut server, &ports(start))
        .and_then(|()| run_commands(rest, start, &binary, &dir));
    server.stop();
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!(
            "xtask quickstart: the server's output:\n{}",
            server.output()
        );
    }
    result
}

/// The fenced `sh` blocks of the quickstart section.
fn shell_blocks(readme: &str) -> Result<Vec<String>, String> {
    let start = readme
        .find(SECTION)
        .ok_or_else(|| format!("README.md has no `{SECTION}` section"))?;
    let section = &readme[start + SECTION.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in section.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(_), "```") => blocks.push(current.take().unwrap_or_default()),
            (Some(block), line) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    Ok(blocks)
}

/// The ports of the `--listen` flags in the start block.
fn ports(start: &str) -> Vec<u16> {
    start
        .split_whitespace()
        .filter_map(|word| word.split_once('=').map(|(addr, _)| addr))
        .filter_map(|addr| addr.rsplit_once(':'))
        .filter_map(|(_, port)| port.parse().ok())
        .collect()
}

struct Server {
    child: Child,
    log: std::path::PathBuf,
}

impl Server {
    /// Run the start block in bash, in its own process group, with `cargo xtask` working
    /// from `dir` as it does in the repository.
    fn start(block: &str, root: &Path, dir: &Path) -> Result<Server, String> {
        use std::os::unix::process::CommandExt as _;
        let log = dir.join("server.log");
        let output =
            std::fs::File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        let mut bash = Command::new("bash");
        super::without_cargo_package_env(&mut bash);
        let child = bash
            .arg("-c")
            .arg(format!("set -e\n{block}"))
            .current_dir(dir)
            .env(
                "CARGO_ALIAS_XTASK",
                format!(
                    "run --quiet --manifest-path {} --package xtask --",
                    root.join("Cargo.toml").display()
                ),
            )
            .stdin(Stdio::null())
            .stdout(output.try_clone().map_err(|e| e.to_string())?)
            .stderr(output)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot run bash: {e}"))?;
        Ok(Server { child, log })
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGINT to the whole group (bash, cargo, the server), as Ctrl-C would.
    fn stop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-INT", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

/// Wait for `GET /healthz` on every port (the first start may compile the server).
fn wait_until_up(server: &mut Server, ports: &[u16]) -> Result<(), String> {
    if ports.is_empty() {
        return Err("the start block names no --listen port".into());
    }
    let deadline = Instant::now() + Duration::from_secs(1800);
    for &port in ports {
        loop {
            if healthy(port) {
                break;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!(
                    "the server exited ({status}) before it answered on {port}"
                ));
            }
            if Instant::now() > deadline {
                return Err(format!("nothing answered on port {port}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(())
}

fn healthy(port: u16) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let mut answer = String::new();
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_string(&mut answer).is_ok()
        && answer.starts_with("HTTP/1.1 200")
}

/// One command of a block and what its comment promises.
#[derive(Debug, PartialEq)]
struct Step {
    command: String,
    fails: bool,
    expected: Vec<String>,
}

/// Split a block into complete commands: continuation lines (`\`) and brace groups (a
/// function definition) stay together.
fn steps(block: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut command = String::new();
    let mut depth = 0i32;
    for line in block.lines() {
        if command.is_empty() && line.trim().is_empty() {
            continue;
        }
        command.push_str(line);
        command.push('\n');
        let code = strip_comment(line);
        depth += code.matches('{').count() as i32 - code.matches('}').count() as i32;
        if depth <= 0 && !code.trim_end().ends_with('\\') {
            steps.push(step(std::mem::take(&mut command)));
            depth = 0;
        }
    }
    if !command.trim().is_empty() {
        steps.push(step(command));
    }
    steps
}

fn step(command: String) -> Step {
    let comment = command
        .lines()
        .last()
        .and_then(comment_of)
        .unwrap_or_default();
    let fails = comment.trim_start().starts_with("error:");
    Step {
        expected: promised_pairs(&comment),
        fails,
        command,
    }
}

/// `# ...` at the end of a line, outside quotes.
fn comment_of(line: &str) -> Option<String> {
    let code = strip_comment(line);
    line.get(code.len()..)
        .and_then(|rest| rest.strip_prefix('#'))
        .map(str::to_string)
}

fn strip_comment(line: &str) -> &str {
    let (mut single, mut double) = (false, false);
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && (previous.is_whitespace() || i == 0) => {
                return &line[..i];
            }
            _ => {}
        }
        previous = c;
    }
    line
}

/// Every `"key": "value"` in a comment.
fn promised_pairs(comment: &str) -> Vec<String> {
    let mut pairs = Vec::new();
    let mut rest = comment;
    while let Some(start) = rest.find('"') {
        let tail = &rest[start..];
        let Some(end) = find_pair_end(tail) else {
            break;
        };
        pairs.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    pairs
}

/// The length of `"key": "value"` at the start of `text`, if it is one.
fn find_pair_end(text: &str) -> Option<usize> {
    let key_end = text[1..].find('"')? + 2;
    let after_key = &text[key_end..];
    let value = after_key.strip_prefix(": \"")?;
    let value_end = value.find('"')?;
    Some(key_end + 3 + value_end + 1)
}

/// Run every step in one bash (so functions and variables carry over), checking each.
fn run_commands(blocks: &[String], start: &str, binary: &Path, dir: &Path) -> Result<(), String> {
    let exports: String = start
        .lines()
        .filter(|line| line.trim_start().starts_with("export "))
        .map(|line| format!("{}\n", strip_comment(line)))
        .collect();
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).map_err(|e| format!("creating {}: {e}", bin.display()))?;
    let zb = bin.join("zb");
    let _ = std::fs::remove_file(&zb);
    std::os::unix::fs::symlink(binary, &zb)
        .map_err(|e| format!("linking {}: {e}", zb.display()))?;
    let mut script = format!(
        "{exports}export PATH={}:\"$PATH\"\nstep() {{ eval \"$1\" >step.out 2>&1; status=$?; out=$(cat step.out); printf '%s\\n' \"$out\"; return $status; }}\n",
        shell_quote(&bin.display().to_string())
    );
    let steps: Vec<Step> = blocks.iter().flat_map(|block| steps(block)).collect();
    for (i, step) in steps.iter().enumerate() {
        let expected = step
            .expected
            .iter()
            .map(|pair| format!(" && grep -qF -- {} <<<\"$out\"", shell_quote(pair)))
            .collect::<String>();
        let check = if step.fails {
            format!(
                "if step {cmd}; then echo 'step {n}: expected an error'; exit 1; fi\n",
                cmd = shell_quote(&step.command),
                n = i + 1
            )
        } else {
            format!(
                "step {cmd} || {{ echo 'step {n} failed'; exit 1; }}\ntrue{expected} || {{ echo 'step {n}: the output lacks what its comment promises'; exit 1; }}\n",
                cmd = shell_quote(&step.command),
                n = i + 1
            )
        };
        script.push_str(&format!(
            "echo '--- step {}:' {}\n",
            i + 1,
            shell_quote(step.command.trim())
        ));
        script.push_str(&check);
    }
    let status = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir)
        .status()
        .map_err(|e| format!("cannot run bash: {e}"))?;
    if status.success() {
        eprintln!(
            "xtask quickstart: {} commands ran as the README says",
            steps.len()
        );
        Ok(())
    } else {
        Err("a quickstart command did not do what the README says (see above)".into())
    }
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_split_and_comments_promise() {
        let block = "checkin() {  # PORT HOST\n  curl -s \"x\" \\\n    -d '{\"a\":1}'\n}\nzb session request --user ada     # \"zone\": \"east\", agent east-agent-1\nzb x --user mia     # error: 503 no_capacity\n";
        let steps = steps(block);
        assert_eq!(steps.len(), 3, "{steps:#?}");
        assert!(steps[0].command.starts_with("checkin()"));
        assert!(steps[0].command.ends_with("}\n"));
        assert_eq!(steps[1].expected, vec!["\"zone\": \"east\"".to_string()]);
        assert!(!steps[1].fails);
        assert!(steps[2].fails);
        assert_eq!(
            ports(
                "cargo xtask run -- serve --listen 127.0.0.1:8080=east --listen 127.0.0.1:8081=west"
            ),
            vec![8080, 8081]
        );
        assert_eq!(strip_comment("echo '#not' # yes"), "echo '#not' ");
    }
}
