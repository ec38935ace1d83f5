//! `chargetail check`: the config, the sink and PaperCut, as the daemon
//! would meet them.

use std::path::Path;
use std::process::ExitCode;

use crate::config::Config;

pub(super) fn check(cfg: &Config) -> anyhow::Result<ExitCode> {
    println!("config {}: ok", cfg.file.display());
    for src in &cfg.sources {
        if let Some(w) = source_path_warning(&src.path) {
            println!("warning: {w}");
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(async {
        use crate::sink::Sink;
        cfg.make_sink()?.check().await
    })?;
    println!("{report}");
    if let Some(p) = &cfg.papercut {
        // api.isUserExists: PaperCut answers only a valid token from an
        // allowed address.
        crate::billing::enrich::check(p).map_err(|e| anyhow::anyhow!("[papercut] {e}"))?;
        println!("papercut {}: token accepted", p.url);
    }
    Ok(ExitCode::SUCCESS)
}

/// `[source] path` matching nothing in a directory that does not exist is
/// most likely a typo (the daemon would wait for it forever).
fn source_path_warning(pattern: &str) -> Option<String> {
    let matched = glob::glob(pattern).ok()?.filter_map(Result::ok).next();
    if matched.is_some() {
        return None;
    }
    // The directory part before the first glob character.
    let cut = pattern.find(['*', '?', '[']).unwrap_or(pattern.len());
    let dir = Path::new(&pattern[..cut]);
    let dir = if pattern[..cut].ends_with('/') {
        dir
    } else {
        dir.parent().unwrap_or(Path::new("/"))
    };
    (!dir.is_dir()).then(|| {
        format!(
            "[source] path {pattern:?} matches no file and its directory {} does not exist",
            dir.display()
        )
    })
}
