//! GraphQL software other people wrote, from npm, against the real server:
//! the GraphQL-over-HTTP audits of graphql-http, and urql, Apollo Client
//! (with automatic persisted queries) and graphql-ws with their default
//! settings, and graphql-ws resuming a stream with its last cursor. The scripts and their pinned packages are in `tests/clients/`
//! (see its README).
//!
//! Needs Node.js 20 or newer with npm, and the npm registry the first time the
//! packages are installed (into `target/npm-clients/`, once per machine and
//! lock file). Without `node` or `npm` these tests fail and say so.
//!
//! Node runs on a blocking thread: a test's runtime is single-threaded and
//! must keep serving the app while node talks to it.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::spawn_app;

const INSTALL_TIMEOUT: Duration = Duration::from_secs(120);
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

/// What is copied from `tests/clients/` to where the packages are installed.
const FILES: &[&str] = &[
    "package.json",
    "package-lock.json",
    ".npmrc",
    "audit.mjs",
    "clients.mjs",
    "resume.mjs",
];

/// The lock file a successful `npm ci` installed (npm's own
/// `node_modules/.package-lock.json` is not a copy of it). Inside
/// `node_modules`, so that removing the packages removes it too.
const INSTALLED_LOCK: &str = "node_modules/.stockroom-installed-lock.json";

fn sources() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

fn install_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/npm-clients")
}

fn npm() -> &'static str {
    if cfg!(windows) { "npm.cmd" } else { "npm" }
}

/// How a program ended, and everything it printed.
struct Run {
    what: String,
    code: Option<i32>,
    timed_out: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    fn success(&self) -> bool {
        !self.timed_out && self.code == Some(0)
    }

    fn report(&self) -> String {
        let end = if self.timed_out {
            "killed: it did not finish in time".to_string()
        } else {
            match self.code {
                Some(code) => format!("exit code {code}"),
                None => "killed by a signal".to_string(),
            }
        };
        format!(
            "$ {} ({end})\n--- stdout\n{}--- stderr\n{}",
            self.what, self.stdout, self.stderr
        )
    }
}

/// Runs `program` in `dir`, killed after `timeout`. Output goes to files, so
/// that what a killed program printed is kept. A program that is not
/// installed fails the test with what to install.
fn run(dir: &Path, program: &str, args: &[&str], timeout: Duration) -> Run {
    let mut stdout = tempfile::tempfile().unwrap();
    let mut stderr = tempfile::tempfile().unwrap();
    let what = format!("{program} {}", args.join(" "));
    let spawned = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(stdout.try_clone().unwrap())
        .stderr(stderr.try_clone().unwrap())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{program}` was not found: these tests run npm packages and need Node.js 20 or \
             newer with npm on the PATH (https://nodejs.org/, or the nodejs and npm packages \
             of the distribution)"
        ),
        Err(e) => panic!("`{what}` could not start: {e}"),
    };
    let deadline = Instant::now() + timeout;
    let (code, timed_out) = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break (status.code(), false);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break (None, true);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let read = |file: &mut File| {
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(0)).unwrap();
        file.read_to_end(&mut bytes).unwrap();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    Run {
        what,
        code,
        timed_out,
        stdout: read(&mut stdout),
        stderr: read(&mut stderr),
    }
}

/// The scripts and their packages, installed in `target/npm-clients/`:
/// `npm ci` runs when the lock installed there is not the committed one.
/// A file lock keeps parallel tests (threads of this binary, or processes)
/// from installing at the same time; the first one installs, the others wait
/// and find it done.
fn install() -> PathBuf {
    let dir = install_dir();
    fs::create_dir_all(&dir).unwrap();
    let guard = File::create(dir.join(".install.lock")).unwrap();
    guard.lock().unwrap();

    let node = run(&dir, "node", &["--version"], Duration::from_secs(30));
    assert!(node.success(), "{}", node.report());
    let major: u32 = node
        .stdout
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(
        major >= 20,
        "these tests need Node.js 20 or newer, found {}",
        node.stdout.trim()
    );

    // Rewritten only when they changed: another process may be running them.
    for name in FILES {
        let wanted = fs::read(sources().join(name)).unwrap();
        let target = dir.join(name);
        if fs::read(&target).ok().as_deref() != Some(wanted.as_slice()) {
            fs::write(&target, &wanted).unwrap();
        }
    }

    let lock = fs::read(sources().join("package-lock.json")).unwrap();
    if fs::read(dir.join(INSTALLED_LOCK)).ok().as_deref() != Some(lock.as_slice()) {
        let ci = run(
            &dir,
            npm(),
            &["ci", "--no-audit", "--no-fund"],
            INSTALL_TIMEOUT,
        );
        assert!(
            ci.success(),
            "installing the npm packages in {} failed (the first install needs the npm \
             registry):\n{}",
            dir.display(),
            ci.report()
        );
        fs::write(dir.join(INSTALLED_LOCK), &lock).unwrap();
    }
    dir
}

/// The directory the pinned npm packages are installed in (see [`install`]).
pub(crate) async fn npm_clients() -> PathBuf {
    tokio::task::spawn_blocking(install).await.unwrap()
}

/// `node <args>` in the install directory, bounded by `SCRIPT_TIMEOUT`.
async fn node(dir: PathBuf, args: Vec<String>) -> Run {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&dir, "node", &args, SCRIPT_TIMEOUT)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn graphql_http_server_audits_pass() {
    let dir = npm_clients().await;
    let app = spawn_app().await;
    let url = format!("{}/graphql", app.address);

    let out = node(dir, vec!["audit.mjs".into(), url.clone()]).await;
    println!("{}", out.report());
    assert!(
        out.success() && out.stdout.contains(" passed, 0 failed"),
        "graphql-http's server audits failed against {url}:\n{}",
        out.report()
    );
}

#[tokio::test]
async fn urql_apollo_and_graphql_ws_clients_work_with_default_settings() {
    let dir = npm_clients().await;
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let sku = "NPM-CLIENTS-1";
    app.create_product(&admin, sku, 7).await;
    let http = format!("{}/graphql", app.address);
    let ws = format!("{}/graphql/ws", app.address.replace("http://", "ws://"));

    let out = node(
        dir,
        vec!["clients.mjs".into(), http.clone(), ws, admin, sku.into()],
    )
    .await;
    println!("{}", out.report());
    assert!(
        out.success() && out.stdout.contains(" passed, 0 failed"),
        "the npm GraphQL clients failed against {http}:\n{}",
        out.report()
    );
}

#[tokio::test]
async fn graphql_ws_resubscribes_with_its_last_cursor_and_misses_nothing() {
    let dir = npm_clients().await;
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "NPM-RESUME-1", 1000).await;
    let http = format!("{}/graphql", app.address);
    let ws = format!("{}/graphql/ws", app.address.replace("http://", "ws://"));

    let out = node(
        dir,
        vec![
            "resume.mjs".into(),
            http.clone(),
            ws,
            admin,
            product,
            "300".into(),
            "100".into(),
        ],
    )
    .await;
    println!("{}", out.report());
    assert!(
        out.success() && out.stdout.contains("8 passed, 0 failed"),
        "graphql-ws did not resume without a gap against {http}:\n{}",
        out.report()
    );
}
