//! SIGINT and SIGTERM during a prepare: cancel it cleanly (downloads keep their partials and
//! hash checkpoints), then exit 130 or 143 as shells expect, saying the work will resume.

use bootvault::{CancelToken, Outcome, Progress};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

/// Cancels `token` on the first SIGINT or SIGTERM, and remembers which one came.
///
/// The watcher (a thread and a socket pair) starts only when the prepare has work to do
/// ([`Interrupts::arm`], on its first progress event of a step that is not `cached`): a warm
/// prepare that only reads does not pay for it, and a signal before that point loses nothing
/// (the default action ends a process that has written nothing).
pub struct Interrupts {
    token: CancelToken,
    received: Arc<AtomicI32>,
    handle: Mutex<Option<signal_hook::iterator::Handle>>,
    armed: std::sync::Once,
}

impl Interrupts {
    /// Ready to watch; nothing is installed until [`Interrupts::arm`].
    pub fn new(token: CancelToken) -> Interrupts {
        Interrupts {
            token,
            received: Arc::new(AtomicI32::new(0)),
            handle: Mutex::new(None),
            armed: std::sync::Once::new(),
        }
    }

    /// Starts watching (once). Without a working signal thread the defaults stay (the process
    /// dies at once, which loses at most the bytes in flight: a partial is resumed anyway).
    pub fn arm(&self) {
        self.armed.call_once(|| {
            let Ok(mut signals) = Signals::new([SIGINT, SIGTERM]) else {
                return;
            };
            let handle = signals.handle();
            let seen = self.received.clone();
            let token = self.token.clone();
            let spawned = std::thread::Builder::new()
                .name("bootvault-signals".into())
                .spawn(move || {
                    if let Some(sig) = signals.forever().next() {
                        seen.store(sig, Ordering::SeqCst);
                        token.cancel();
                    }
                });
            if spawned.is_ok() {
                *self.handle.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
            }
        });
    }

    /// Whether `p` shows a step at work (anything but looking and `cached`).
    pub fn is_work(p: &Progress<'_>) -> bool {
        match p {
            Progress::Checking { .. } => false,
            Progress::Ready { outcome, .. } => *outcome != Outcome::Cached,
            _ => true,
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
        let handle = self.handle.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = handle.take() {
            h.close();
        }
    }
}
