//! SIGTERM and SIGINT, and the broadcast flag that tells every connection to finish.
//!
//! SIGTERM is how a replica is retired (Kubernetes, systemd, a rolling restart behind HAProxy):
//! the accept loop drains first (main.rs). SIGINT is a person's Ctrl-C, and stops at once.

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;

/// `true` once connections must stop reading new calls: each closes when it has no call in
/// progress.
pub fn channel() -> (watch::Sender<bool>, watch::Receiver<bool>) {
    watch::channel(false)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    Term,
    Int,
}

impl Stop {
    pub fn name(self) -> &'static str {
        match self {
            Stop::Term => "SIGTERM",
            Stop::Int => "SIGINT",
        }
    }
}

/// Both signals, registered once so that a second one during the drain is seen too.
pub struct Signals {
    int: Signal,
    term: Signal,
}

impl Signals {
    pub fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    /// The next SIGINT or SIGTERM.
    pub async fn next(&mut self) -> Stop {
        tokio::select! {
            _ = self.int.recv() => Stop::Int,
            _ = self.term.recv() => Stop::Term,
        }
    }
}
