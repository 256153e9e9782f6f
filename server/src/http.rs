//! The HTTP/1.1 connections of the metrics and the Open Inference Protocol endpoints: axum's
//! router on hyper's connections, driven on the server's tokio runtime, with a bound on the
//! time a request's head may take (which `axum::serve` does not set).

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How a listener's connections are read.
#[derive(Clone, Copy)]
pub struct HttpLimits {
    /// Longest a peer may take to send a request's head, idle keep-alive time included.
    pub head_timeout: Duration,
    /// The connection's read buffer, which a request's line and headers must fit in.
    pub read_buffer: usize,
}

/// Resolves once `stop` is true; never without one.
async fn stopped(stop: &mut Option<watch::Receiver<bool>>) {
    match stop {
        Some(rx) => {
            let _ = rx.wait_for(|&s| s).await;
        }
        None => std::future::pending().await,
    }
}

/// Serves `app` on `listener` (`what` names it in the logs) until `stop` turns true: then no
/// new connections, and each open one finishes the request it is in and closes. Without
/// `stop`, until the runtime ends.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    what: &'static str,
    limits: HttpLimits,
    mut stop: Option<watch::Receiver<bool>>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = stopped(&mut stop) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                // An answer goes out at once, not after the peer's delayed ACK.
                let _ = stream.set_nodelay(true);
                stream
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::error!("{what}: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(app.clone());
        let mut stop = stop.clone();
        connections.spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(limits.head_timeout)
                .max_buf_size(limits.read_buffer);
            let conn = http.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let served = tokio::select! {
                r = conn.as_mut() => r,
                () = stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = served {
                tracing::debug!("{what} connection: {e}");
            }
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}
