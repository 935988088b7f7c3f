//! What a build prints while it runs, in BuildKit's two styles: `plain` (one numbered line
//! per event, with every line of a step's output) and `tty` (one line per finished step with
//! its time, output only when a step fails), or nothing at all (`-q`).

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    Plain,
    Tty,
    Quiet,
}

impl ProgressMode {
    /// `auto` is `tty` on a terminal and `plain` elsewhere, as in docker.
    pub fn parse(text: &str, stderr_is_terminal: bool) -> Result<ProgressMode, String> {
        match text {
            "plain" => Ok(ProgressMode::Plain),
            "tty" => Ok(ProgressMode::Tty),
            "quiet" => Ok(ProgressMode::Quiet),
            "auto" if stderr_is_terminal => Ok(ProgressMode::Tty),
            "auto" => Ok(ProgressMode::Plain),
            other => Err(format!(
                "unknown progress style {other:?}: auto, plain, tty or quiet"
            )),
        }
    }
}

/// One vertex of the output: a step or an internal action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepId(usize);

pub struct Progress {
    mode: ProgressMode,
    out: Mutex<Box<dyn Write + Send>>,
    next: AtomicUsize,
    start: Instant,
    titles: Mutex<Vec<(String, Instant)>>,
}

impl Progress {
    pub fn new(mode: ProgressMode, out: Box<dyn Write + Send>) -> Progress {
        Progress {
            mode,
            out: Mutex::new(out),
            next: AtomicUsize::new(1),
            start: Instant::now(),
            titles: Mutex::new(Vec::new()),
        }
    }

    pub fn mode(&self) -> ProgressMode {
        self.mode
    }

    fn print(&self, text: &str) {
        if let Ok(mut out) = self.out.lock() {
            // A closed output must not fail the build.
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        }
    }

    pub fn begin(&self, title: &str) -> StepId {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut t) = self.titles.lock() {
            if t.len() < n {
                t.resize(n, (String::new(), Instant::now()));
            }
            t[n - 1] = (title.to_string(), Instant::now());
        }
        if self.mode == ProgressMode::Plain {
            self.print(&format!("#{n} {title}"));
        }
        StepId(n)
    }

    fn title(&self, id: StepId) -> (String, f64) {
        self.titles
            .lock()
            .ok()
            .and_then(|t| t.get(id.0 - 1).cloned())
            .map(|(s, at)| (s, at.elapsed().as_secs_f64()))
            .unwrap_or_default()
    }

    /// A line of a step's output, `elapsed` seconds into it.
    pub fn output(&self, id: StepId, elapsed: f64, line: &str) {
        if self.mode == ProgressMode::Plain {
            self.print(&format!("#{} {elapsed:.3} {line}", id.0));
        }
    }

    /// A note about a step (`writing image sha256:... done`).
    pub fn note(&self, id: StepId, text: &str) {
        if self.mode == ProgressMode::Plain {
            self.print(&format!("#{} {text}", id.0));
        }
    }

    pub fn cached(&self, id: StepId) {
        match self.mode {
            ProgressMode::Plain => self.print(&format!("#{} CACHED", id.0)),
            ProgressMode::Tty => {
                let (title, _) = self.title(id);
                self.print(&format!(" => CACHED {title}"));
            }
            ProgressMode::Quiet => {}
        }
    }

    pub fn done(&self, id: StepId) {
        let (title, secs) = self.title(id);
        match self.mode {
            ProgressMode::Plain => self.print(&format!("#{} DONE {secs:.1}s", id.0)),
            ProgressMode::Tty => self.print(&format!(" => {title:<60} {secs:>5.1}s")),
            ProgressMode::Quiet => {}
        }
    }

    /// A failed step: its last lines of output (which `tty` and quiet did not show yet) and
    /// the error.
    pub fn failed(&self, id: StepId, tail: &[String], error: &str) {
        let (title, secs) = self.title(id);
        match self.mode {
            ProgressMode::Plain => self.print(&format!("#{} ERROR: {error}", id.0)),
            ProgressMode::Tty | ProgressMode::Quiet => {
                self.print(&format!(" => ERROR {title:<54} {secs:>5.1}s"));
                for line in tail {
                    self.print(&format!("    {line}"));
                }
            }
        }
    }

    /// The closing line of `tty` output.
    pub fn finish(&self, ok: bool) {
        if self.mode == ProgressMode::Tty {
            let n = self.next.load(Ordering::Relaxed) - 1;
            let state = if ok { "FINISHED" } else { "FAILED" };
            self.print(&format!(
                "[+] Building {:.1}s ({n}/{n}) {state}",
                self.start.elapsed().as_secs_f64()
            ));
        }
    }
}
