//! Signals and watchdogs: a drill always tears down, and a step that would overrun its budget is
//! stopped where it is.
//!
//! SIGTERM, SIGINT and SIGHUP are blocked in the drill's threads and taken by a thread of its
//! own, which stops the running command and removes the sandbox registered in [`LIVE`]; the main
//! thread then sees [`interrupted`], writes the metrics and returns. SIGKILL cannot be caught: the
//! next drill finds what such a run left (see `sandbox::recover`).

use crate::sandbox::{self, Sandbox};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Which signal interrupted the drill (0: none).
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);
/// The sandbox to remove when a signal arrives, with its pg_ctl.
static LIVE: Mutex<Option<(Sandbox, String)>> = Mutex::new(None);

/// The signal that interrupted the drill, if any.
pub fn interrupted() -> Option<i32> {
    match INTERRUPTED.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

/// Register (or clear) the sandbox a signal must remove.
pub fn set_live(live: Option<(Sandbox, String)>) {
    *LIVE.lock().unwrap_or_else(|e| e.into_inner()) = live;
}

/// The registered sandbox.
pub fn live() -> Option<(Sandbox, String)> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Start the signal thread (see the module doc).
pub fn watch() {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    if set.thread_block().is_err() {
        return;
    }
    std::thread::spawn(move || {
        let Ok(sig) = set.wait() else { return };
        INTERRUPTED.store(sig as i32, Ordering::SeqCst);
        crate::progress(&format!("received {sig}: stopping and tearing down"));
        kill_children();
        if let Some((sandbox, pg_ctl)) = live() {
            let _ = sandbox::destroy(&sandbox, &pg_ctl);
        }
    });
}

/// SIGTERM to this process's children (the command running now).
pub fn kill_children() {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    for task in tasks.flatten() {
        let Ok(list) = std::fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        for pid in list
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
}

/// `secs` from now, saturating: a budget of 2^63 seconds is "never", not a panic.
pub fn deadline(secs: i64) -> Instant {
    let now = Instant::now();
    let secs = u64::try_from(secs).unwrap_or(0);
    now.checked_add(Duration::from_secs(secs))
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(now)
}

/// Run `f` (which runs commands) under a watchdog: if `deadline` passes before `f` returns, the
/// command running then gets SIGTERM, so a step that would overrun its budget is stopped there
/// instead of running on. Returns `f`'s result and whether the watchdog fired.
pub fn with_deadline<T>(deadline: Instant, f: impl FnOnce() -> T) -> (T, bool) {
    let done = Arc::new(AtomicBool::new(false));
    let dog = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || loop {
            if done.load(Ordering::SeqCst) {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                kill_children();
                return true;
            }
            // Woken early by `unpark` when `f` returns (or spuriously: the loop checks again).
            std::thread::park_timeout(left);
        })
    };
    let result = f();
    done.store(true, Ordering::SeqCst);
    dog.thread().unpark();
    (result, dog.join().unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_saturate() {
        assert!(deadline(i64::MAX) > Instant::now() + Duration::from_secs(86_400));
        assert!(deadline(-1) <= Instant::now());
    }

    #[test]
    fn the_watchdog_fires_only_when_late() {
        let ((), late) = with_deadline(deadline(60), || ());
        assert!(!late);
        let ((), late) = with_deadline(Instant::now(), || {
            std::thread::sleep(Duration::from_millis(50))
        });
        assert!(late);
    }
}
