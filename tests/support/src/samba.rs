//! Samba as a throw-away Active Directory domain controller: provisioned into a temporary
//! directory, on its own loopback address (LDAP's ports are fixed), with a test CA and a
//! server certificate naming that address, so that clients verify TLS for real. Stopped and
//! removed when dropped. Debian's packages come from `cargo xtask setup`.

use std::io::Write;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const REALM: &str = "EXAMPLE.TEST";
pub const BASE_DN: &str = "DC=example,DC=test";
/// The OU the tests create computer records in (created at start).
pub const OU_DN: &str = "OU=VDI,DC=example,DC=test";
pub const ADMIN: &str = "Administrator@EXAMPLE.TEST";
pub const ADMIN_PASSWORD: &str = "Adm1n-Passw0rd!";

pub struct Samba {
    child: Child,
    dir: tempfile::TempDir,
    /// The loopback address it listens on.
    pub ip: String,
    /// The test CA's certificate (PEM).
    pub ca_pem: String,
}

/// One loopback address per DC: 127.<from the process id>.<counter>.2.
fn next_ip() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    format!("127.{}.{}.2", 10 + std::process::id() % 200, 1 + n % 250)
}

use crate::run;

impl Samba {
    pub fn start() -> Samba {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ip = next_ip();
        let path = |p: &str| d.join(p).display().to_string();
        run(
            Command::new("samba-tool")
                .args([
                    "domain",
                    "provision",
                    "--server-role=dc",
                    "--dns-backend=NONE",
                ])
                .args(["--host-name=DC1", &format!("--host-ip={ip}")])
                .args([&format!("--realm={REALM}"), "--domain=EXAMPLE"])
                .arg(format!("--adminpass={ADMIN_PASSWORD}"))
                .arg(format!("--targetdir={}", d.display()))
                .arg(format!("--option=interfaces={ip}/8"))
                .arg("--option=bind interfaces only=yes")
                .arg("--option=server services=ldap")
                .arg(format!("--option=log file={}", path("logs/log.%m")))
                .arg(format!("--option=pid directory={}", path("run")))
                .arg(format!("--option=ncalrpc dir={}", path("run/ncalrpc")))
                .arg(format!(
                    "--option=winbindd socket directory={}",
                    path("run/winbindd")
                ))
                .arg(format!(
                    "--option=ntp signd socket directory={}",
                    path("run/ntp_signd")
                )),
            "samba-tool domain provision",
        );
        let ca_pem = crate::tls::make_certificates(&d.join("tls"), &ip);
        let conf = d.join("etc/smb.conf");
        let text = std::fs::read_to_string(&conf).unwrap().replacen(
            "[global]\n",
            &format!(
                "[global]\n\ttls enabled = yes\n\ttls keyfile = {0}/key.pem\n\ttls certfile = {0}/cert.pem\n\ttls cafile = {0}/ca.pem\n",
                d.join("tls").display()
            ),
            1,
        );
        std::fs::write(&conf, text).unwrap();
        let child = Command::new("samba")
            .args(["-i", "-s"])
            .arg(&conf)
            // In `-i` mode samba exits when its stdin reaches end of file.
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start samba");
        let samba = Samba {
            child,
            dir,
            ip,
            ca_pem,
        };
        let started = Instant::now();
        while TcpStream::connect((samba.ip.as_str(), 636)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "samba did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // LDAPS takes a moment more than the port.
        let started = Instant::now();
        while !samba.bind_as(ADMIN, ADMIN_PASSWORD) {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "samba's LDAPS did not answer"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        samba.modify(
            "ldapadd",
            &format!("dn: {OU_DN}\nobjectClass: organizationalUnit\nou: VDI\n"),
        );
        samba
    }

    /// `ldaps://IP`
    pub fn url(&self) -> String {
        format!("ldaps://{}", self.ip)
    }

    fn ldap_tool(&self, tool: &str) -> Command {
        let mut command = Command::new(tool);
        command
            .env("LDAPTLS_CACERT", self.dir.path().join("tls/ca.pem"))
            .env("LDAPTLS_REQCERT", "demand")
            .args(["-H", &self.url(), "-x"]);
        command
    }

    /// Whether a simple bind as `who` with `password` succeeds (proved by a base search;
    /// Samba has no WhoAmI).
    pub fn bind_as(&self, who: &str, password: &str) -> bool {
        self.ldap_tool("ldapsearch")
            .args(["-D", who, "-w", password, "-b", BASE_DN, "-s", "base", "dn"])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Object `dn` as LDIF (attribute: value lines), or `None` if it does not exist.
    pub fn entry(&self, dn: &str) -> Option<String> {
        let output = self
            .ldap_tool("ldapsearch")
            .args([
                "-D",
                ADMIN,
                "-w",
                ADMIN_PASSWORD,
                "-b",
                dn,
                "-s",
                "base",
                "-o",
                "ldif-wrap=no",
            ])
            .output()
            .unwrap();
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).to_string())
    }

    /// Run `ldapadd`/`ldapmodify` as the administrator with `ldif`.
    pub fn modify(&self, tool: &str, ldif: &str) {
        let mut child = self
            .ldap_tool(tool)
            .args(["-D", ADMIN, "-w", ADMIN_PASSWORD])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ldif.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{tool}:\n{ldif}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for Samba {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
