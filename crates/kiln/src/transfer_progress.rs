//! Progress of pulls and pushes: a bar per blob on a terminal, docker's status lines
//! without one, nothing with `-q`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_client::{Event, Outcome, Progress};
use kiln_image::Digest;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum TransferKind {
    Pull,
    Push,
}

enum Mode {
    Quiet,
    Lines,
    Bars {
        multi: MultiProgress,
        bars: Mutex<HashMap<Digest, ProgressBar>>,
    },
}

pub struct Display {
    kind: TransferKind,
    mode: Mode,
}

fn short(digest: &Digest) -> &str {
    let hex = digest.hex();
    &hex[..hex.len().min(12)]
}

fn outcome_text(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Downloaded => "Pull complete".into(),
        Outcome::AlreadyPresent => "Already exists".into(),
        Outcome::Pushed => "Pushed".into(),
        Outcome::AlreadyExists => "Layer already exists".into(),
        Outcome::Mounted { from } => format!("Mounted from {from}"),
    }
}

impl Display {
    pub fn new(kind: TransferKind, quiet: bool) -> Display {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stdout().is_terminal() {
            Mode::Bars {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stdout()),
                bars: Mutex::new(HashMap::new()),
            }
        } else {
            Mode::Lines
        };
        Display { kind, mode }
    }

    /// Leaves the finished bars on screen.
    pub fn finish(&self) {
        if let Mode::Bars { multi, .. } = &self.mode {
            let _ = multi.clear();
            if let Ok(bars) = self.bars_lock() {
                for bar in bars.values() {
                    if !bar.is_finished() {
                        bar.abandon();
                    }
                }
            }
        }
    }

    fn bars_lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<Digest, ProgressBar>>, ()> {
        match &self.mode {
            Mode::Bars { bars, .. } => bars.lock().map_err(|_| ()),
            _ => Err(()),
        }
    }
}

impl Progress for Display {
    fn event(&self, event: Event<'_>) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Lines => match event {
                Event::Finished { digest, outcome } => {
                    println!("{}: {}", short(digest), outcome_text(&outcome));
                }
                Event::Retrying {
                    digest,
                    resume_at,
                    reason,
                } => {
                    println!(
                        "{}: Retrying from byte {resume_at} ({reason})",
                        short(digest)
                    );
                }
                _ => {}
            },
            Mode::Bars { multi, bars } => {
                let Ok(mut bars) = bars.lock() else { return };
                match event {
                    Event::Started { digest, size, .. } => {
                        let bar = multi.add(ProgressBar::new(size));
                        bar.set_style(
                            ProgressStyle::with_template(
                                "{prefix}: {msg:<12} [{bar:30}] {bytes}/{total_bytes}",
                            )
                            .unwrap_or_else(|_| ProgressStyle::default_bar())
                            .progress_chars("=> "),
                        );
                        bar.set_prefix(short(digest).to_string());
                        bar.set_message(match self.kind {
                            TransferKind::Pull => "Downloading",
                            TransferKind::Push => "Pushing",
                        });
                        bars.insert(digest.clone(), bar);
                    }
                    Event::Advanced { digest, bytes } => {
                        if let Some(bar) = bars.get(digest) {
                            bar.inc(bytes);
                        }
                    }
                    Event::Retrying {
                        digest, resume_at, ..
                    } => {
                        if let Some(bar) = bars.get(digest) {
                            bar.set_position(resume_at);
                            bar.set_message("Retrying");
                        }
                    }
                    Event::Finished { digest, outcome } => {
                        if let Some(bar) = bars.get(digest) {
                            bar.set_style(
                                ProgressStyle::with_template("{prefix}: {msg}")
                                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                            );
                            bar.finish_with_message(outcome_text(&outcome));
                        }
                    }
                }
            }
        }
    }
}
