//! The stop signals the example servers hear: Ctrl-C, and on Unix SIGTERM and SIGHUP.

/// Resolves when the process is asked to stop: Ctrl-C, and on Unix SIGTERM and SIGHUP too
/// (the default action of those ended the process with the name left registered: until the
/// lease ran out in rmi-ns, for ever in Pyro's name servers). The handlers are installed now.
pub(crate) fn stop_asked() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let mut hangup = signal(SignalKind::hangup())?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
                _ = hangup.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
