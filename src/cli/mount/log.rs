//! Where the daemon writes: stderr in the foreground, else `--log-file` or syslog.

use std::ffi::CString;
use std::io::Write;
use std::sync::Mutex;

/// Where the daemon's messages go.
pub(super) enum Sink {
    Stderr,
    File(Mutex<std::fs::File>),
    Syslog,
}

/// The daemon's log: one line per message (block failures, signals, mount and
/// unmount), time-stamped in a log file.
pub(super) struct Logger {
    pub(super) sink: Sink,
}

impl Logger {
    pub(super) fn log(&self, msg: &str) {
        match &self.sink {
            Sink::Stderr => eprintln!("{msg}"),
            Sink::File(f) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
                let _ = writeln!(f, "{} {msg}", fs_time(now));
            }
            Sink::Syslog => {
                if let Ok(c) = CString::new(msg.replace('\0', " ")) {
                    // SAFETY: a constant format string and a NUL-terminated argument.
                    unsafe { libc::syslog(libc::LOG_WARNING, c"%s".as_ptr(), c.as_ptr()) };
                }
            }
        }
    }
}

fn fs_time(unix: u64) -> String {
    let days_secs = unix % 86400;
    format!(
        "[{}d {:02}:{:02}:{:02}]",
        unix / 86400,
        days_secs / 3600,
        days_secs / 60 % 60,
        days_secs % 60
    )
}
