//! Cancellation of a prepare: a token a host cancels (or drops the prepare's future), checked
//! between assets, between chunks of a download and between blocks of a hash.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A cheap, cloneable cancellation flag. Cancelling stops a prepare promptly: assets not yet
/// started fail with [`crate::Error::Cancelled`], a download in flight keeps its partial and
/// its hash checkpoint (the next prepare resumes it), and whatever finished is still recorded.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    flag: AtomicBool,
    notify: tokio::sync::Notify,
}

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> CancelToken {
        CancelToken::default()
    }

    /// Cancels every prepare that holds this token (or a clone of it).
    pub fn cancel(&self) {
        self.0.flag.store(true, Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }

    /// Whether [`CancelToken::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.flag.load(Ordering::SeqCst)
    }

    /// Completes once the token is cancelled.
    pub(crate) async fn cancelled(&self) {
        loop {
            // Registered before the check, so a cancel between the two is not missed.
            let notified = self.0.notify.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}
