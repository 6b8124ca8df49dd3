//! A private PostgreSQL cluster per test: `initdb` into a temporary
//! directory, `pg_ctl start` listening on a Unix socket only, stopped and
//! removed when the fixture drops (on panic too, as unwinding drops it).
//!
//! The admin `postgres` logs in by trust; every other role by SCRAM, so the
//! tests see real password checks on the leased roles.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};

use warden_dynsecrets::PostgresDefinition;

const APT_HINT: &str = "install Debian's `postgresql` package (apt-get install postgresql; scripts/setup.sh does this)";

/// Distinct per test in one process; the socket directory is what really
/// keeps clusters apart, the port only names the socket file.
static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

pub struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    log: PathBuf,
    port: u16,
    as_nobody: bool,
    // Dropped last: removes everything above.
    _root: tempfile::TempDir,
}

impl Cluster {
    pub fn start() -> Cluster {
        let bin = server_bin_dir();
        // initdb and postgres refuse to run as root: as root, run them as nobody.
        let as_nobody = rustix::process::geteuid().is_root();
        // Under /tmp rather than $TMPDIR: nobody must be able to reach it.
        let root = tempfile::Builder::new()
            .prefix("warden-dynsecrets-pg-")
            .tempdir_in("/tmp")
            .expect("create a temporary directory for the test cluster");
        let data = root.path().join("data");
        let socket_dir = root.path().join("socket");
        let log = root.path().join("server.log");
        fs::create_dir(&socket_dir).unwrap();
        if as_nobody {
            run(Command::new("chown")
                .arg("-R")
                .arg("nobody:nogroup")
                .arg(root.path()));
        }
        let offset = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (std::process::id() as u16 % 2_000) * 16 + offset % 16;

        let mut cluster = Cluster {
            bin,
            data,
            socket_dir,
            log,
            port,
            as_nobody,
            _root: root,
        };
        let mut initdb = cluster.server_command("initdb");
        run(initdb.arg("-D").arg(&cluster.data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ]));

        let mut conf = fs::OpenOptions::new()
            .append(true)
            .open(cluster.data.join("postgresql.conf"))
            .unwrap();
        write!(
            conf,
            "\n# warden-dynsecrets test cluster\n\
             listen_addresses = ''\n\
             unix_socket_directories = '{}'\n\
             port = {}\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             max_connections = 30\n\
             shared_buffers = 16MB\n\
             password_encryption = 'scram-sha-256'\n\
             # Far from UTC: a VALID UNTIL written in the wrong zone shows.\n\
             timezone = 'Pacific/Chatham'\n\
             # Every statement is logged, so a test can look for passwords in it.\n\
             log_statement = 'all'\n",
            cluster.socket_dir.display(),
            cluster.port
        )
        .unwrap();
        fs::write(
            cluster.data.join("pg_hba.conf"),
            "local all postgres trust\nlocal all all scram-sha-256\n",
        )
        .unwrap();

        let mut start = cluster.server_command("pg_ctl");
        start
            .arg("-D")
            .arg(&cluster.data)
            .arg("-l")
            .arg(&cluster.log)
            .args(["-w", "-t", "60", "start"]);
        let output = start.output().expect("run pg_ctl start");
        if !output.status.success() {
            let log = fs::read_to_string(&cluster.log).unwrap_or_default();
            // The data directory is removed by the drop; nothing is running.
            cluster.port = 0;
            panic!(
                "pg_ctl start failed: {}\n{}\nserver log:\n{log}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        cluster
    }

    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// Everything the server logged so far (every statement, see above).
    pub fn server_log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A superuser session over the socket (trust).
    pub fn admin(&self) -> postgres::Client {
        self.connect("postgres", None, "postgres")
            .expect("connect to the test cluster as postgres")
    }

    pub fn connect(
        &self,
        user: &str,
        password: Option<&str>,
        dbname: &str,
    ) -> Result<postgres::Client, postgres::Error> {
        let mut config = postgres::Config::new();
        config
            .host_path(&self.socket_dir)
            .port(self.port)
            .user(user)
            .dbname(dbname);
        if let Some(password) = password {
            config.password(password);
        }
        config.connect(postgres::NoTls)
    }

    /// A definition whose admin is this cluster's `postgres`, by trust.
    pub fn definition(&self, grant_roles: &[&str], database: Option<&str>) -> PostgresDefinition {
        let json = serde_json::json!({
            "name": "test-db",
            "connection": {
                "host": self.socket_dir.display().to_string(),
                "port": self.port,
                "user": "postgres",
                "dbname": "postgres",
            },
            "grant_roles": grant_roles,
            "database": database,
        });
        PostgresDefinition::from_json(&json.to_string()).expect("the test definition parses")
    }

    fn server_command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_nobody {
            let mut command = Command::new("setpriv");
            command
                .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
                .arg(path);
            command
        } else {
            Command::new(path)
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.port == 0 {
            return;
        }
        // Immediate: the cluster is thrown away, nothing to flush.
        let _ = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "-t", "60", "stop"])
            .output();
    }
}

/// The newest /usr/lib/postgresql/<version>/bin with the server binaries,
/// or $WARDEN_PG_BIN. Panics (never skips) when there is none.
fn server_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WARDEN_PG_BIN") {
        let dir = PathBuf::from(dir);
        assert!(
            dir.join("initdb").is_file(),
            "WARDEN_PG_BIN={} has no initdb; {APT_HINT}",
            dir.display()
        );
        return dir;
    }
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin: \
             these tests start a real PostgreSQL; {APT_HINT}"
        ),
    }
}

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("run {command:?}: {e} ({APT_HINT}; setpriv is in util-linux)"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
