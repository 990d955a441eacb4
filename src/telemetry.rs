//! Logging: tracing to stderr, human or JSON, and panics reported through tracing (with
//! the thread, which names the arbiter) instead of raw stderr text.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber and panic hook. `RUST_LOG` overrides `level`.
/// Calling it twice is harmless (the second subscriber is ignored).
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour_wanted())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    std::panic::set_hook(Box::new(move |info| {
        // Replaces any earlier hook, so do the supervisor's part here too.
        crate::supervisor::mark_polling_actor_down();
        let thread = std::thread::current();
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".into());
        tracing::error!(thread = thread.name().unwrap_or("unnamed"), %location, panic = %message, "Panic caught; the supervisor restarts the actor.");
    }));
}

/// Colour only for a person at a terminal: a log file or a pipe to a collector would keep
/// the escape codes as text. `NO_COLOR` (no-color.org) turns it off at a terminal too.
fn colour_wanted() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
