//! Build facts the code reads at compile time:
//! - `STOCKROOM_COMMIT`: the commit the binary is built from (`git rev-parse`,
//!   or the variable of that name where there is no repository, as in the
//!   Docker build, whose context leaves `.git` out), for `stockroom --version`
//!   and `stockroom_build_info`; `unknown` when neither says.
//! - `cfg(test_postgres)`: the integration suite's database (tests/api) is
//!   chosen when the tests are compiled: with STOCKROOM_TEST_POSTGRES_URL set
//!   and not empty it is on, and the tests of one database only are marked
//!   ignored on the other, so the run reports them as ignored instead of as
//!   passed without running.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}

fn main() {
    println!("cargo::rerun-if-env-changed=STOCKROOM_COMMIT");
    // A new commit changes the branch's ref (or packed-refs), not HEAD.
    for path in ["HEAD", "refs/heads", "packed-refs"] {
        if let Some(file) = git(&["rev-parse", "--git-path", path]) {
            println!("cargo::rerun-if-changed={file}");
        }
    }
    let commit = std::env::var("STOCKROOM_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo::rustc-env=STOCKROOM_COMMIT={commit}");

    println!("cargo::rerun-if-env-changed=STOCKROOM_TEST_POSTGRES_URL");
    println!("cargo::rustc-check-cfg=cfg(test_postgres)");
    if std::env::var("STOCKROOM_TEST_POSTGRES_URL").is_ok_and(|v| !v.is_empty()) {
        println!("cargo::rustc-cfg=test_postgres");
    }
}
