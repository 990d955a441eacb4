//! `--production` (or `WAYFARE_PRODUCTION`) refuses a config with fault injection enabled,
//! demo accounts (the built-in defaults have ten), a simulated seller or gateway, or a plain
//! `http://` partner off the loopback interface, naming the key; a config of real partners
//! passes. Runs the real `wayfare` binary's
//! `check-config`, which loads config exactly as `serve` does.

use std::process::{Command, Output};

fn check_config(args: &[&str], env: &[(&str, &str)]) -> Output {
    check_config_with(None, args, env)
}

/// `check-config` in an empty directory, with `file` as its `./config.toml` when given.
fn check_config_with(file: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    if let Some(text) = file {
        std::fs::write(dir.path().join("config.toml"), text).unwrap();
    }
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

    // Faults in a non-production process are fine.
    assert!(check_config(&[], &faults_on).status.success());
    // Without demo accounts, the shipped demo's simulated partners are refused next.
    let refused = check_config(&["--production"], &[("WAYFARE__DEMO__ACCOUNTS", "0")]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("payments.kind"), "{stderr}");
}

/// Real partners on loopback (a TLS sidecar, or the fakes of a drill).
const PRODUCTION: &str = r#"
[demo]
accounts = 0

[payments]
kind = "http"
[payments.http]
base_url = "http://127.0.0.1:9100/"

[[sellers]]
name = "alpha"
kind = "http"
[sellers.http]
base_url = "http://localhost:9001/"
"#;

#[test]
fn production_refuses_simulated_partners_and_plain_remote_urls() {
    let fine = check_config_with(Some(PRODUCTION), &["--production"], &[]);
    let stderr = String::from_utf8_lossy(&fine.stderr);
    assert!(fine.status.success(), "{stderr}");
    // Over TLS, a partner off the loopback interface is fine.
    let remote_tls = PRODUCTION.replace("http://127.0.0.1:9100/", "https://gateway.example/");
    let fine = check_config_with(Some(&remote_tls), &["--production"], &[]);
    let stderr = String::from_utf8_lossy(&fine.stderr);
    assert!(fine.status.success(), "{stderr}");

    let cases = [
        (
            PRODUCTION.replace(
                r#"kind = "http"
[payments.http]"#,
                r#"kind = "simulated"
[payments.http]"#,
            ),
            "payments.kind",
        ),
        (
            PRODUCTION.replace(
                r#"name = "alpha"
kind = "http""#,
                r#"name = "alpha"
kind = "simulated""#,
            ),
            "sellers.alpha.kind",
        ),
        (
            PRODUCTION.replace("http://127.0.0.1:9100/", "http://gateway.example:9100/"),
            "payments.http.base_url",
        ),
        (
            PRODUCTION.replace("http://localhost:9001/", "http://10.0.0.7:9001/"),
            "sellers.alpha.http.base_url",
        ),
    ];
    for (file, key) in cases {
        let refused = check_config_with(Some(&file), &["--production"], &[]);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{key}: {stderr}");
        assert!(stderr.contains(key), "{key}: {stderr}");
        // The same file outside production mode is fine.
        let outside = check_config_with(Some(&file), &[], &[]);
        assert!(
            outside.status.success(),
            "{key}: {}",
            String::from_utf8_lossy(&outside.stderr)
        );
    }
}
