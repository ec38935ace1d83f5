//! Logging: the subscriber on stderr (text, journald-friendly text, or
//! JSON) and the one handle that changes its filter at run time (`[log]
//! level` at start and on SIGHUP). `CHARGETAIL_LOG` in the environment wins.

/// Log format on stderr.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Changes the log filter at run time (SIGHUP, `[log] level`).
type Reloader = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;
static LOG_RELOAD: std::sync::OnceLock<Reloader> = std::sync::OnceLock::new();

/// Set the log level/filter (e.g. `debug`, `chargetail=debug,info`) unless
/// `CHARGETAIL_LOG` fixes it.
pub fn set_log_level(level: &str) -> Result<(), String> {
    if std::env::var_os("CHARGETAIL_LOG").is_some() {
        return Ok(());
    }
    match LOG_RELOAD.get() {
        Some(f) => f(level),
        None => Ok(()),
    }
}

pub fn init(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("CHARGETAIL_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Under systemd the journal adds its own timestamps and shows no colours.
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    macro_rules! install {
        ($b:expr) => {{
            let b = $b.with_filter_reloading();
            let handle = b.reload_handle();
            let _ = LOG_RELOAD.set(Box::new(move |level: &str| {
                let filter =
                    EnvFilter::try_new(level).map_err(|e| format!("log level {level:?}: {e}"))?;
                handle.reload(filter).map_err(|e| e.to_string())
            }));
            let _ = b.try_init();
        }};
    }
    match (format, journald) {
        (LogFormat::Json, _) => install!(builder.json()),
        (LogFormat::Text, true) => install!(builder.without_time().with_ansi(false)),
        (LogFormat::Text, false) => {
            install!(builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())))
        }
    }
}
