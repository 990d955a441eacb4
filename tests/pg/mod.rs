//! A throwaway PostgreSQL server per test: Debian's binaries (`/usr/lib/postgresql/*/bin`),
//! `initdb` into a temp dir, a free port on 127.0.0.1, no fsync (the tests are about
//! concurrency and fencing, not PostgreSQL's own durability). PostgreSQL refuses to run as
//! root, so under root the server runs as `nobody`. Stopped and deleted on drop; killed by
//! the kernel if the test process dies first (`PR_SET_PDEATHSIG`).
//!
//! Missing binaries fail the test naming the package: a PostgreSQL test never passes
//! without a PostgreSQL.

#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running PostgreSQL server, trusting local connections as `postgres`.
pub struct TempPostgres {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

/// The directory of the newest PostgreSQL server binaries Debian installed.
fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL server binaries are missing (no /usr/lib/postgresql/*/bin/postgres): \
             install the Debian package `postgresql` (`apt-get install postgresql`; \
             scripts/test.sh does it)"
        ),
    }
}

/// uid and gid of `nobody`, when running as root.
fn unprivileged() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = std::ffi::CString::new("nobody").unwrap();
    // SAFETY: a valid C string; the returned record is read at once, before any other call.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !pw.is_null(),
        "running as root and there is no user `nobody` to run PostgreSQL as"
    );
    // SAFETY: checked non-null above.
    Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

fn command(bin: &Path, program: &str, user: Option<(u32, u32)>) -> Command {
    let mut cmd = Command::new(bin.join(program));
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    cmd.env_remove("PGDATA").env("LC_ALL", "C");
    cmd
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl TempPostgres {
    /// Initializes and starts a server; returns once it accepts connections.
    pub fn start() -> Self {
        let bin = bin_dir();
        let user = unprivileged();
        let dir = tempfile::Builder::new()
            .prefix("wayfare-pg-")
            .tempdir()
            .unwrap();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let data = dir.path().join("data");
        let init = command(&bin, "initdb", user)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .output()
            .expect("run initdb");
        assert!(
            init.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let port = free_port();
        let child = Self::spawn_server(&bin, user, dir.path(), port);
        let server = TempPostgres { child, port, dir };
        server.wait_ready(&bin);
        server
    }

    /// Starts the postmaster on `dir`'s data directory and `port`.
    fn spawn_server(bin: &Path, user: Option<(u32, u32)>, dir: &Path, port: u16) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("postgres.log"))
            .unwrap();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.join("postgres.log"), Some(uid), Some(gid)).unwrap();
        }
        let mut cmd = command(bin, "postgres", user);
        cmd.arg("-D")
            .arg(dir.join("data"))
            .args(["-p", &port.to_string(), "-h", "127.0.0.1", "-k"])
            .arg(dir)
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: prctl only sets this process's parent-death signal; async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        cmd.spawn().expect("start postgres")
    }

    /// Stops the server (fast shutdown: sessions are ended, as an operator's restart does)
    /// and waits until it has exited.
    pub fn stop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("PostgreSQL did not stop within 30 s: {}", self.log());
    }

    /// Starts the stopped server again, on the same data and port.
    pub fn restart(&mut self) {
        let bin = bin_dir();
        self.child = Self::spawn_server(&bin, unprivileged(), self.dir.path(), self.port);
        self.wait_ready(&bin);
    }

    /// Runs `sql` on database `db` as the superuser (psql, stopping at the first error).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(bin_dir().join("psql"))
            .args(["-qAt", "-v", "ON_ERROR_STOP=1", "-d", &self.url(db), "-c"])
            .arg(sql)
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_ready(&self, bin: &Path) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start within 30 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL of database `db` (which [`TempPostgres::create_db`] makes).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates database `db` and returns its URL.
    pub fn create_db(&self, db: &str) -> String {
        let out = Command::new(bin_dir().join("psql"))
            .args([
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.url("postgres"),
                "-c",
            ])
            .arg(format!("CREATE DATABASE {db}"))
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "CREATE DATABASE {db} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.url(db)
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        // SIGQUIT: immediate shutdown (the data is thrown away next).
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGQUIT);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
