//! `[telemetry]`: distributed tracing exported over OTLP/HTTP (`docs/observability.md`),
//! and the standard `OTEL_*` variables that override it.

use serde::{Deserialize, Serialize};

use super::{ConfigError, LoadedConfig};

/// `[telemetry]`. Off (no OpenTelemetry layer at all) while `otlp_endpoint` is unset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Base URL of an OTLP/HTTP receiver (a Collector, Jaeger, Tempo), e.g.
    /// `http://127.0.0.1:4318`; spans go to `<endpoint>/v1/traces`. Unset: tracing off.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of every span. Default `wayfare`.
    pub service_name: String,
    /// Share of new traces recorded, 0.0 to 1.0; a request that arrives with a
    /// `traceparent` follows its caller's decision instead. Default 1.0.
    pub sample_ratio: f64,
    /// Most finished spans waiting for export; past it new spans are dropped and
    /// counted. Default 2048.
    pub max_queue: usize,
    /// Longest wait for one export, in ms. Default 5000.
    pub export_timeout_ms: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            service_name: "wayfare".into(),
            sample_ratio: 1.0,
            max_queue: 2048,
            export_timeout_ms: 5000,
        }
    }
}

impl TelemetryConfig {
    /// Range checks.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &'static str, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.into(),
            })
        };
        if let Some(endpoint) = &self.otlp_endpoint {
            match reqwest::Url::parse(endpoint) {
                Ok(url)
                    if matches!(url.scheme(), "http" | "https")
                        && !url.cannot_be_a_base()
                        && url.query().is_none() => {}
                _ => {
                    return bad(
                        "telemetry.otlp_endpoint",
                        "must be an http:// or https:// URL such as http://127.0.0.1:4318",
                    )
                }
            }
        }
        let name = self.service_name.trim();
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return bad(
                "telemetry.service_name",
                "must be 1 to 128 characters without control characters",
            );
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return bad("telemetry.sample_ratio", "must be between 0.0 and 1.0");
        }
        if !(16..=1_000_000).contains(&self.max_queue) {
            return bad("telemetry.max_queue", "must be between 16 and 1000000");
        }
        if !(100..=60_000).contains(&self.export_timeout_ms) {
            return bad(
                "telemetry.export_timeout_ms",
                "must be between 100 and 60000",
            );
        }
        Ok(())
    }

    /// The traces URL: the endpoint with `/v1/traces` appended, as the OTLP
    /// specification says for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn traces_url(&self) -> Option<String> {
        let endpoint = self.otlp_endpoint.as_deref()?;
        Some(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
    }
}

/// The standard variables read, with the key each one sets.
pub const OTEL_VARIABLES: [(&str, &str); 3] = [
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "telemetry.otlp_endpoint"),
    ("OTEL_SERVICE_NAME", "telemetry.service_name"),
    ("OTEL_TRACES_SAMPLER_ARG", "telemetry.sample_ratio"),
];

impl LoadedConfig {
    /// Applies the standard OpenTelemetry variables over the file and `WAYFARE__*`
    /// layers (an operator's OTel setup works unchanged), then validates again. An empty
    /// variable counts as unset; `lookup` is `std::env::var` outside tests.
    pub fn apply_otel_env(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        for (name, key) in OTEL_VARIABLES {
            let Some(value) = lookup(name).filter(|v| !v.trim().is_empty()) else {
                continue;
            };
            let telemetry = &mut self.config.telemetry;
            match name {
                "OTEL_EXPORTER_OTLP_ENDPOINT" => telemetry.otlp_endpoint = Some(value),
                "OTEL_SERVICE_NAME" => telemetry.service_name = value,
                _ => {
                    telemetry.sample_ratio = value.trim().parse().map_err(|_| {
                        ConfigError::Parse(format!(
                            "environment variable {name}: {value:?} is not a number between 0.0 and 1.0"
                        ))
                    })?;
                }
            }
            self.set_by_env(name, key);
        }
        self.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn loaded(text: &str) -> LoadedConfig {
        Config::parse(text, Vec::new()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        Config::load_layered(Some(&path), Vec::new()).unwrap()
    }

    #[test]
    fn off_without_an_endpoint_and_checked_when_set() {
        let c = Config::parse("", Vec::new()).unwrap();
        assert_eq!(c.telemetry.otlp_endpoint, None);
        assert_eq!(c.telemetry.traces_url(), None);
        let c = Config::parse(
            "[telemetry]\notlp_endpoint = \"http://c:4318/\"\nsample_ratio = 0.25\n",
            Vec::new(),
        )
        .unwrap();
        assert_eq!(
            c.telemetry.traces_url().as_deref(),
            Some("http://c:4318/v1/traces")
        );
        for bad in [
            "otlp_endpoint = \"grpc://c:4317\"",
            "otlp_endpoint = \"not a url\"",
            "sample_ratio = 1.5",
            "sample_ratio = -0.1",
            "service_name = \" \"",
            "max_queue = 1",
        ] {
            let e = Config::parse(&format!("[telemetry]\n{bad}\n"), Vec::new()).unwrap_err();
            assert!(e.to_string().contains("telemetry."), "{bad}: {e}");
        }
    }

    #[test]
    fn otel_variables_override_the_file_and_bad_values_are_named() {
        let mut l = loaded("[telemetry]\nservice_name = \"file\"\nsample_ratio = 0.5\n");
        l.apply_otel_env(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_SERVICE_NAME", "edge-1"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.01"),
        ]))
        .unwrap();
        let t = &l.config.telemetry;
        assert_eq!(t.otlp_endpoint.as_deref(), Some("http://collector:4318"));
        assert_eq!(t.service_name, "edge-1");
        assert_eq!(t.sample_ratio, 0.01);
        assert!(l.sources.contains(&crate::config::ConfigSource::Env(
            "OTEL_SERVICE_NAME".into()
        )));

        let mut l = loaded("");
        let e = l
            .apply_otel_env(env(&[("OTEL_TRACES_SAMPLER_ARG", "lots")]))
            .unwrap_err();
        assert!(e.to_string().contains("OTEL_TRACES_SAMPLER_ARG"), "{e}");
        let mut l = loaded("");
        let e = l
            .apply_otel_env(env(&[("OTEL_TRACES_SAMPLER_ARG", "2")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("telemetry.sample_ratio") && e.contains("OTEL_TRACES_SAMPLER_ARG"),
            "{e}"
        );
        let mut l = loaded("");
        l.apply_otel_env(env(&[("OTEL_SERVICE_NAME", "")])).unwrap();
        assert_eq!(l.config.telemetry.service_name, "wayfare");
    }
}
