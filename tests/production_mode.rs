//! `--production` (or `WAYFARE_PRODUCTION`) refuses a config with fault injection enabled
//! or with demo accounts (the built-in defaults have ten), naming the key; without them it
//! changes nothing. Runs the real `wayfare` binary's
//! `check-config`, which loads config exactly as `serve` does.

use std::process::{Command, Output};

fn check_config(args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wayfare"));
    // An empty working directory: no ./config.toml, so only the environment speaks.
    cmd.current_dir(dir.path())
        .arg("check-config")
        .args(args)
        .env_remove("WAYFARE_PRODUCTION")
        .env_remove("WAYFARE__FAULTS__ENABLED")
        .env_remove("WAYFARE__DEMO__ACCOUNTS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run wayfare")
}

#[test]
fn production_refuses_enabled_faults_and_names_the_key() {
    let faults_on = [("WAYFARE__FAULTS__ENABLED", "true")];
    let refused = check_config(&["--production"], &faults_on);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("faults.enabled"), "{stderr}");

    let refused = check_config(&[], &[faults_on[0], ("WAYFARE_PRODUCTION", "1")]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("faults.enabled"), "{stderr}");

    // Demo accounts have published API keys: refused too.
    let refused = check_config(&["--production"], &[("WAYFARE__DEMO__ACCOUNTS", "3")]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("demo.accounts"), "{stderr}");

    // Without a config file the built-in defaults are the shipped demo, whose demo
    // accounts production refuses, pointing at the shipped file.
    let refused = check_config(&["--production"], &[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("demo.accounts"), "{stderr}");
    assert!(stderr.contains("built-in defaults"), "{stderr}");

    // Faults in a non-production process, and production without faults or demo
    // accounts, are fine.
    assert!(check_config(&[], &faults_on).status.success());
    let fine = check_config(&["--production"], &[("WAYFARE__DEMO__ACCOUNTS", "0")]);
    assert!(
        fine.status.success(),
        "{}",
        String::from_utf8_lossy(&fine.stderr)
    );
}
