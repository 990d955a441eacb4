//! The real `wayfare` binary at start-up: a missing config file means the shipped demo, an
//! explicit `--config` that does not exist is refused by name, config errors name their
//! file line or environment variable, every failure is one `error:` line (no backtrace,
//! even with `RUST_BACKTRACE=1`) with exit status 1, the start-up log names the config
//! sources without secret values, and a second process on a data dir in use is refused
//! with one line naming the dir.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary in `dir` (no config.toml there unless a test writes one), with no
/// `WAYFARE*` or `OTEL_*` variable of the caller's environment leaking in.
fn wayfare(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wayfare"));
    cmd.current_dir(dir);
    for (name, _) in std::env::vars_os() {
        let name_text = name.to_string_lossy();
        if name_text.starts_with("WAYFARE") || name_text.starts_with("OTEL_") {
            cmd.env_remove(name);
        }
    }
    cmd.env("RUST_BACKTRACE", "1");
    cmd
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The run failed with status 1 and said so in exactly one `error:` line; that line.
fn one_error_line(out: &Output) -> String {
    let text = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(lines[0].starts_with("error: "), "{text}");
    assert!(!text.to_lowercase().contains("backtrace"), "{text}");
    lines[0].to_owned()
}

#[test]
fn without_a_config_file_the_shipped_demo_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = wayfare(dir.path()).arg("check-config").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let printed: toml::Table = String::from_utf8_lossy(&out.stdout).parse().unwrap();
    let sellers: Vec<&str> = printed["sellers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(sellers, ["alpha", "bravo", "charlie"]);
    assert_eq!(printed["demo"]["accounts"].as_integer(), Some(10));
    assert!(
        stderr(&out).contains("built-in defaults"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_missing_config_path_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = wayfare(dir.path())
        .args(["check-config", "--config", "absent.toml"])
        .output()
        .unwrap();
    let line = one_error_line(&out);
    assert!(
        line.contains("cannot read config file absent.toml"),
        "{line}"
    );
}

#[test]
fn a_config_typo_is_one_line_naming_the_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        "[server]\nworkers = 1\n\n[accounts]\nshardz = 4\n",
    )
    .unwrap();
    for command in ["check-config", "serve", "seed"] {
        let mut cmd = wayfare(dir.path());
        cmd.arg(command);
        if command == "seed" {
            cmd.args(["--accounts", "1"]);
        }
        let line = one_error_line(&cmd.output().unwrap());
        assert!(line.contains("config file config.toml, line 5"), "{line}");
        assert!(line.contains("shardz"), "{line}");
    }
}

#[test]
fn the_standard_otel_variables_override_the_file_and_bad_ones_are_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        "[telemetry]\nservice_name = \"from-file\"\nsample_ratio = 0.5\n",
    )
    .unwrap();
    let out = wayfare(dir.path()).arg("check-config").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let printed: toml::Table = String::from_utf8_lossy(&out.stdout).parse().unwrap();
    assert!(printed["telemetry"].get("otlp_endpoint").is_none(), "off");
    assert_eq!(
        printed["telemetry"]["service_name"].as_str(),
        Some("from-file")
    );

    let out = wayfare(dir.path())
        .arg("check-config")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
        .env("OTEL_SERVICE_NAME", "edge-7")
        .env("OTEL_TRACES_SAMPLER_ARG", "0.01")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let printed: toml::Table = String::from_utf8_lossy(&out.stdout).parse().unwrap();
    let t = &printed["telemetry"];
    assert_eq!(t["otlp_endpoint"].as_str(), Some("http://collector:4318"));
    assert_eq!(t["service_name"].as_str(), Some("edge-7"));
    assert_eq!(t["sample_ratio"].as_float(), Some(0.01));
    assert!(stderr(&out).contains("environment variable OTEL_SERVICE_NAME"));

    for (name, value, says) in [
        (
            "OTEL_TRACES_SAMPLER_ARG",
            "often",
            "OTEL_TRACES_SAMPLER_ARG",
        ),
        ("OTEL_TRACES_SAMPLER_ARG", "1.5", "telemetry.sample_ratio"),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "collector:4318",
            "telemetry.otlp_endpoint",
        ),
    ] {
        let out = wayfare(dir.path())
            .arg("check-config")
            .env(name, value)
            .output()
            .unwrap();
        let line = one_error_line(&out);
        assert!(line.contains(says) && line.contains(name), "{line}");
    }
}

#[test]
fn a_bad_variable_is_named_not_a_line_of_a_merged_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = wayfare(dir.path())
        .arg("check-config")
        .env("WAYFARE__SEARCH__DEADLINE_MZ", "5")
        .output()
        .unwrap();
    let line = one_error_line(&out);
    assert!(
        line.contains("environment variable WAYFARE__SEARCH__DEADLINE_MZ"),
        "{line}"
    );
    assert!(line.contains("deadline_mz"), "{line}");
    assert!(!line.contains(", line "), "{line}");

    let out = wayfare(dir.path())
        .arg("check-config")
        .env("WAYFARE__ACCOUNTS__DEADLINE_MS", "0")
        .output()
        .unwrap();
    let line = one_error_line(&out);
    assert!(line.contains("accounts.deadline_ms"), "{line}");
    assert!(
        line.contains("environment variable WAYFARE__ACCOUNTS__DEADLINE_MS"),
        "{line}"
    );
}

/// A `serve` child, killed and reaped when dropped (a failed assertion included).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_second_process_on_the_same_data_dir_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("first.log");
    let token = "cli-test-operator-token-0123456789";
    let serve = |cmd: &mut Command| {
        cmd.args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .env("RUST_LOG", "info")
            .env("WAYFARE__ADMIN__TOKEN", token);
    };
    let mut first = wayfare(dir.path());
    serve(&mut first);
    let mut first = Server(
        first
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    // The listening line comes after the store is open, so the lock is held from then on.
    let mut lines = BufReader::new(first.0.stdout.take().unwrap()).lines();
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "first server did not start"
        );
        let line = lines
            .next()
            .unwrap_or_else(|| {
                panic!(
                    "first server exited:\n{}",
                    std::fs::read_to_string(&log).unwrap()
                )
            })
            .unwrap();
        if line.starts_with("wayfare listening on ") {
            break;
        }
    }

    let mut second = wayfare(dir.path());
    serve(&mut second);
    // Only the error: the start-up log (info) goes to stderr as well.
    second.env("RUST_LOG", "warn");
    let line = one_error_line(&second.output().unwrap());
    assert!(line.contains("held by another wayfare process"), "{line}");
    assert!(line.contains(&data.display().to_string()), "{line}");
    assert!(
        !line.contains("WouldBlock") && !line.contains("code: 11"),
        "{line}"
    );

    // The first server's start-up log named its config sources, never the token's value.
    drop(first);
    let text = std::fs::read_to_string(&log).unwrap();
    let sources = text
        .lines()
        .find(|l| l.contains("Loaded configuration."))
        .unwrap_or_else(|| panic!("no config sources logged:\n{text}"));
    for source in [
        "built-in defaults",
        "environment variable WAYFARE__ADMIN__TOKEN",
        "command-line flag --data-dir",
        "command-line flag --bind",
    ] {
        assert!(sources.contains(source), "{source} missing: {sources}");
    }
    assert!(!text.contains(token), "{text}");
}
