//! SIGINT and SIGTERM during a prepare: cancel it cleanly (downloads keep their partials and
//! hash checkpoints), then exit 130 or 143 as shells expect, saying the work will resume.

use bootvault::CancelToken;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

/// Cancels `token` on the first SIGINT or SIGTERM, and remembers which one came.
pub struct Interrupts {
    received: Arc<AtomicI32>,
    handle: Option<signal_hook::iterator::Handle>,
}

impl Interrupts {
    /// Starts watching. Without a working signal thread the defaults stay (the process dies
    /// at once, which loses at most the bytes in flight: a partial is resumed anyway).
    pub fn watch(token: CancelToken) -> Interrupts {
        let received = Arc::new(AtomicI32::new(0));
        let Ok(mut signals) = Signals::new([SIGINT, SIGTERM]) else {
            return Interrupts {
                received,
                handle: None,
            };
        };
        let handle = signals.handle();
        let seen = received.clone();
        let spawned = std::thread::Builder::new()
            .name("bootvault-signals".into())
            .spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    seen.store(sig, Ordering::SeqCst);
                    token.cancel();
                }
            });
        Interrupts {
            received,
            handle: spawned.ok().map(|_| handle),
        }
    }

    /// The exit code for the signal that came (128 + its number), if one did.
    pub fn exit_code(&self) -> Option<u8> {
        match self.received.load(Ordering::SeqCst) {
            0 => None,
            sig => Some(128u8.saturating_add(sig as u8)),
        }
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.close();
        }
    }
}
