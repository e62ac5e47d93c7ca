//! Chooses the integration suite's database (tests/api) when the tests are
//! compiled: with STOCKROOM_TEST_POSTGRES_URL set and not empty,
//! `cfg(test_postgres)` is on. The tests of one database only are then
//! marked ignored on the other, so the run reports them as ignored instead
//! of as passed without running.

fn main() {
    println!("cargo::rerun-if-env-changed=STOCKROOM_TEST_POSTGRES_URL");
    println!("cargo::rustc-check-cfg=cfg(test_postgres)");
    // The same test as tests/api/helpers.rs makes at run time.
    if std::env::var("STOCKROOM_TEST_POSTGRES_URL").is_ok_and(|v| !v.is_empty()) {
        println!("cargo::rustc-cfg=test_postgres");
    }
}
