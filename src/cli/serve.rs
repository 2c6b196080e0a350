//! `dkim-relay serve`: load, start (with the embedded simulator when configured), serve until
//! SIGTERM/SIGINT; SIGHUP reloads, and so does a change to the watched files when
//! `[reload] watch = true`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use crate::config::reload::Live;
use crate::config::{self, UpstreamTarget};
use crate::relay::Relay;

pub fn serve(path: &Path) -> ExitCode {
    let snapshot = match config::load(path) {
        Ok(s) => s,
        Err(diags) => {
            super::print_diagnostics(&diags);
            eprintln!("{}: configuration refused; nothing started", path.display());
            return ExitCode::FAILURE;
        }
    };
    for w in &snapshot.warnings {
        tracing::warn!("{w}");
    }
    let Some(runtime) = super::runtime() else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(run(path, snapshot))
}

async fn run(path: &Path, mut snapshot: config::Snapshot) -> ExitCode {
    if config::publish::needed(&snapshot) {
        let refused = match crate::doctor::HickoryLookup::new(&snapshot.dns) {
            Ok(lookup) => config::publish::enforce(None, &mut snapshot, &lookup)
                .await
                .err(),
            Err(e) => Some(vec![config::Diagnostic {
                severity: config::Severity::Error,
                file: path.to_path_buf(),
                line: None,
                key: "dns".into(),
                message: format!("require_published needs DNS: {e}"),
            }]),
        };
        if let Some(diags) = refused {
            super::print_diagnostics(&diags);
            eprintln!("{}: configuration refused; nothing started", path.display());
            return ExitCode::FAILURE;
        }
    }
    let (embedded, simulator) = match &snapshot.upstream.target {
        UpstreamTarget::Remote(_) => (None, None),
        UpstreamTarget::Simulator(settings) => {
            match crate::sim::relay_upstream::start(settings, &snapshot.domains).await {
                Ok((e, sim)) => (Some(e), Some(sim)),
                Err(e) => {
                    eprintln!("error: cannot start the embedded SES simulator: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let listeners = match crate::server::bind_all(&snapshot.server).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    for l in &listeners {
        if let Ok(a) = l.tcp.local_addr() {
            tracing::info!(address = %a, mode = ?l.mode, domains = snapshot.domains.len(), "dkim-relay listening");
        }
    }
    // The embedded simulator's endpoint is resolved here, once, and kept by `Live` for every
    // reload (a reload cannot switch the simulator on or off: it needs a restart).
    let live = match embedded {
        Some(e) => Live::new(path, snapshot).with_embedded(e),
        None => Live::new(path, snapshot),
    };
    let relay = Relay::new(None);
    spawn_reload_on_sighup(live.clone());
    let watcher = config::watch::spawn(live.clone());
    let stopped =
        crate::server::run_listeners(listeners, live, Arc::clone(&relay), shutdown_signal()).await;
    watcher.abort();
    if stopped.aborted > 0 {
        tracing::warn!(aborted = stopped.aborted, "stopped with connections cut");
    }
    if let Some(sim) = simulator {
        sim.shutdown().await;
    }
    tracing::info!("dkim-relay stopped");
    ExitCode::SUCCESS
}

fn spawn_reload_on_sighup(live: Live) {
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot listen for SIGHUP; reload unavailable");
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading");
            match live.reload_checked().await {
                Ok(r) => config::reload::log_reloaded(&r),
                Err(diags) => config::reload::log_refused(&diags),
            }
        }
    });
}

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
