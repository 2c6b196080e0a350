//! `dkim-relay serve` and `dkim-relay ses-sim`, thin: load, start through the composition root
//! ([`crate::daemon`]), wait for signals — SIGHUP reloads, SIGTERM/SIGINT drain and stop — and
//! turn the outcome into an exit code. The wiring itself (the embedded simulator, listeners,
//! the live configuration, the watcher) is the daemon's, shared with every test.

use std::path::Path;
use std::process::ExitCode;

use crate::config;
use crate::daemon::{self, StartError};

pub fn serve(path: &Path) -> ExitCode {
    let snapshot = match config::load(path) {
        Ok(s) => s,
        Err(diags) => {
            super::print_diagnostics(&diags);
            eprintln!("{}: configuration refused; nothing started", path.display());
            return ExitCode::FAILURE;
        }
    };
    super::logging::init(snapshot.log_format);
    for w in &snapshot.warnings {
        tracing::warn!("{w}");
    }
    let Some(runtime) = super::runtime() else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(run(path, snapshot))
}

async fn run(path: &Path, snapshot: config::Snapshot) -> ExitCode {
    let running = match daemon::start(path, snapshot).await {
        Ok(r) => r,
        Err(e) => return start_failed(&e),
    };
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(_) => {
            tracing::warn!("cannot listen for SIGHUP; reload unavailable");
            None
        }
    };
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => {
                tracing::info!("SIGHUP: reloading");
                match running.reload().await {
                    Ok(r) => config::reload::log_reloaded(&r),
                    Err(diags) => config::reload::log_refused(&diags),
                }
            }
        }
    }
    running.shutdown().await;
    tracing::info!("dkim-relay stopped");
    ExitCode::SUCCESS
}

/// `dkim-relay ses-sim`: the simulator on its own, until SIGINT/SIGTERM.
pub fn ses_sim(path: &Path) -> ExitCode {
    let Some(runtime) = super::runtime() else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(async {
        let sim = match daemon::start_simulator(path).await {
            Ok(s) => s,
            Err(e) => return start_failed(&e),
        };
        tracing::info!("SES simulator running; Ctrl-C to stop");
        shutdown_signal().await;
        tracing::info!("stopping the SES simulator");
        sim.shutdown().await;
        ExitCode::SUCCESS
    })
}

/// Prints why nothing started (every diagnostic of a refused configuration first).
fn start_failed(e: &StartError) -> ExitCode {
    if let StartError::Refused { diagnostics, .. } = e {
        super::print_diagnostics(diagnostics);
        eprintln!("{e}");
    } else {
        eprintln!("error: {e}");
    }
    ExitCode::FAILURE
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
    }
}
