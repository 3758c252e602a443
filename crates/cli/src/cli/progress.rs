//! What a prepare reports as it goes: progress bars on a terminal (one aggregate bar plus one
//! per active asset), log lines for -v, and `--message-format json` events.

use super::events::Events;
use super::ui::{self, ui};
use bootvault::{Manifest, Progress, Report};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Everything a prepare's progress callback feeds.
pub struct Reporter {
    bars: Option<Bars>,
    events: Option<Arc<Events>>,
}

impl Reporter {
    /// Bars when the run draws progress (`ui().progress`), JSON events when `events`.
    pub fn new(manifest: &Manifest, events: bool) -> Reporter {
        Reporter {
            bars: ui()
                .progress
                .then(|| Bars::new(manifest.assets.len() as u64, "prepare")),
            events: events.then(|| Arc::new(Events::new())),
        }
    }

    pub fn callback(&self) -> bootvault::ProgressFn {
        let bars = self.bars.as_ref().map(Bars::callback);
        let events = self.events.clone();
        Arc::new(move |p: &Progress<'_>| {
            log(p);
            if let Some(b) = &bars {
                b(p);
            }
            if let Some(e) = &events {
                e.emit(p);
            }
        })
    }

    /// Clears the bars; writes the events' summary line.
    pub fn finish(self, report: Option<&Report>) {
        if let Some(b) = self.bars {
            b.finish();
        }
        if let (Some(e), Some(r)) = (self.events, report) {
            e.summary(r);
        }
    }
}

/// Log lines for -v (info) and -vv (debug); the library logs downloads, retries, resumes and
/// lock waits.
fn log(p: &Progress<'_>) {
    match p {
        Progress::Checking { name } => tracing::debug!("{name}: checking"),
        Progress::Ready { name, outcome } => tracing::info!("{name}: {}", outcome.as_str()),
        Progress::Failed { name, error } => tracing::debug!("{name}: failed: {error}"),
        _ => {}
    }
}

pub struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    per: Arc<Mutex<HashMap<String, (ProgressBar, u64)>>>,
}

impl Bars {
    /// An aggregate bar over `count` assets, labelled `prefix`; log lines go through it.
    pub fn new(count: u64, prefix: &str) -> Bars {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        let total = multi.add(ProgressBar::new(count));
        total.set_style(
            ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} assets {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        total.set_prefix(prefix.to_string());
        ui::set_bars(Some(multi.clone()));
        Bars {
            multi,
            total,
            per: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Relabels the aggregate bar and restarts it (the demo's steps).
    #[cfg(feature = "demo")]
    pub fn restart(&self, prefix: &str) {
        self.total.set_prefix(prefix.to_string());
        self.total.reset();
    }

    pub fn callback(&self) -> bootvault::ProgressFn {
        let multi = self.multi.clone();
        let total = self.total.clone();
        let per = self.per.clone();
        let style = ProgressStyle::with_template(
            "{prefix:>10} {msg:<9} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        Arc::new(move |p: &Progress<'_>| {
            let mut per = per.lock().unwrap_or_else(|e| e.into_inner());
            let bar_for = |per: &mut HashMap<String, (ProgressBar, u64)>,
                           name: &str,
                           msg: &str,
                           total_len: u64| {
                let entry = per.entry(name.to_string()).or_insert_with(|| {
                    let b = multi.add(ProgressBar::new(total_len));
                    b.set_style(style.clone());
                    b.set_prefix(name.to_string());
                    (b, 0)
                });
                if entry.1 != total_len {
                    entry.0.set_length(total_len);
                    entry.0.set_position(0);
                    entry.1 = total_len;
                }
                entry.0.set_message(msg.to_string());
                entry.0.clone()
            };
            match p {
                Progress::Downloading {
                    name,
                    done,
                    total: t,
                } => {
                    bar_for(&mut per, name, "download", t.unwrap_or(*done)).set_position(*done);
                }
                Progress::Verifying {
                    name,
                    done,
                    total: t,
                } => {
                    bar_for(&mut per, name, "verify", *t).set_position(*done);
                }
                Progress::Waiting { name } => {
                    bar_for(&mut per, name, "waiting", 0);
                }
                Progress::Ready { name, .. } | Progress::Failed { name, .. } => {
                    if let Some((b, _)) = per.remove(*name) {
                        b.finish_and_clear();
                        multi.remove(&b);
                    }
                    total.inc(1);
                }
                _ => {}
            }
        })
    }

    pub fn finish(self) {
        self.total.finish_and_clear();
        let _ = self.multi.clear();
        ui::set_bars(None);
    }
}
