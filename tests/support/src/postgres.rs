//! A throw-away PostgreSQL (Debian's packaged server) per test binary, a fresh database per
//! test server, and the switch that runs a suite on it: `ZONEBROKER_TEST_STORAGE=postgres`.
//!
//! The cluster starts on first use, in its own directory, on its own port and socket
//! directory, with `fsync` on. A watchdog process stops it (`-m immediate`) and removes its
//! directory once the test binary has exited, however it exited.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::run;

/// The engine test servers use: `sled` (the default) or `postgres`.
pub fn storage_engine() -> &'static str {
    static ENGINE: OnceLock<&'static str> = OnceLock::new();
    ENGINE.get_or_init(
        || match std::env::var("ZONEBROKER_TEST_STORAGE").as_deref() {
            Ok("postgres") => "postgres",
            Ok("sled") | Ok("") | Err(_) => "sled",
            Ok(other) => panic!("ZONEBROKER_TEST_STORAGE={other}: say `sled` or `postgres`"),
        },
    )
}

/// This test binary's cluster, started on first use.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(Cluster::start)
}

/// The database (in [`cluster`]) of a test server's data directory: made on first use, the
/// same on a restart with the same directory.
pub fn database_of(data_dir: &Path) -> String {
    static DATABASES: OnceLock<Mutex<HashMap<PathBuf, String>>> = OnceLock::new();
    let mut databases = DATABASES.get_or_init(Default::default).lock().unwrap();
    databases
        .entry(data_dir.to_path_buf())
        .or_insert_with(|| cluster().create_database())
        .clone()
}

pub struct Cluster {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    databases: AtomicU32,
}

impl Cluster {
    /// A cluster of its own (for a test that crashes it; the others share [`cluster`]).
    pub fn start() -> Cluster {
        let cluster = Cluster::init();
        cluster.start_server();
        cluster
    }

    /// A cluster of its own that takes TCP connections over TLS only (`hostssl` in
    /// `pg_hba.conf`), with a certificate for 127.0.0.1 signed by a test CA; answers it and
    /// the CA's file.
    pub fn start_tls() -> (Cluster, PathBuf) {
        let cluster = Cluster::init();
        let certs = cluster.dir.join("certs");
        crate::tls::make_certificates(&certs, "127.0.0.1");
        if is_root() {
            run(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&certs),
                "chown",
            );
        }
        let data = cluster.data();
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .unwrap();
        use std::io::Write as _;
        writeln!(
            conf,
            "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'",
            certs.join("cert.pem").display(),
            certs.join("key.pem").display()
        )
        .unwrap();
        cluster.start_server();
        (cluster, certs.join("ca.pem"))
    }

    fn init() -> Cluster {
        let bin = bin_dir();
        let dir = std::env::temp_dir().join(format!(
            "zonebroker-pg-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            run(
                Command::new("chown").arg("postgres:postgres").arg(&dir),
                "chown",
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Cluster {
            port,
            dir,
            bin,
            databases: AtomicU32::new(0),
        };
        run(
            cluster
                .tool("initdb")
                .arg("-D")
                .arg(cluster.data())
                .args(["-A", "trust", "-U", "zb", "--no-sync"])
                .stdout(Stdio::null()),
            "initdb",
        );
        // Stop the cluster and remove it once this test binary is gone.
        let stop = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {pg_ctl} -D '{data}' -m immediate stop; rm -rf '{dir}'",
            pid = std::process::id(),
            pg_ctl = as_owner(&cluster.bin.join("pg_ctl")),
            data = cluster.data().display(),
            dir = cluster.dir.display(),
        );
        Command::new("sh")
            .args(["-c", &stop])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the cluster's watchdog");
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A PostgreSQL program, run as the cluster's owner.
    fn tool(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    /// Start (or start again) the server, with `fsync` on.
    pub fn start_server(&self) {
        run(
            self.tool("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .arg("-l")
                .arg(self.dir.join("log"))
                .args(["-w", "-o"])
                .arg(format!(
                    "-c listen_addresses=127.0.0.1 -p {} -k {} -c max_connections=400 -c fsync=on",
                    self.port,
                    self.dir.display()
                ))
                .arg("start")
                .stdout(Stdio::null()),
            "pg_ctl start",
        );
    }

    /// Stop the server as a crash would (`-m immediate`: no checkpoint).
    pub fn crash_server(&self) {
        run(
            self.tool("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "stop"])
                .stdout(Stdio::null()),
            "pg_ctl stop",
        );
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://zb@127.0.0.1:{}/{database}", self.port)
    }

    /// The same database over the cluster's Unix socket (a database on the same machine).
    pub fn socket_url(&self, database: &str) -> String {
        let directory: String = self
            .dir
            .display()
            .to_string()
            .bytes()
            .map(|b| match b {
                b'/' => "%2F".to_string(),
                _ => (b as char).to_string(),
            })
            .collect();
        format!("postgres://zb@{directory}:{}/{database}", self.port)
    }

    /// A new, empty database.
    pub fn create_database(&self) -> String {
        let name = format!("t_{}", self.databases.fetch_add(1, Ordering::SeqCst));
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        name
    }

    /// Run `sql` in `database`; answers the rows, one per line, fields split by `|`.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-U", "zb", "-X", "-q", "-t", "-A"])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-d")
            .arg(database)
            .arg("-c")
            .arg(sql)
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

/// The newest installed PostgreSQL's programs (`cargo xtask setup` installs one).
fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .expect("no PostgreSQL server under /usr/lib/postgresql: run `cargo xtask setup`")
}

fn as_owner(program: &Path) -> String {
    if is_root() {
        format!("runuser -u postgres -- {}", program.display())
    } else {
        program.display().to_string()
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid only reads the process's effective user id.
    unsafe { libc::geteuid() == 0 }
}
