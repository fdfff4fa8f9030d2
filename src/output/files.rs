//! Where result files go, checked before anything is sent, and how they are
//! written so that no input, device or other result is ever destroyed.
//!
//! Each output path is resolved once, at start:
//! - a regular file (or a path to create), followed through symlinks to its
//!   target: written at the end to a temporary sibling, synced, and renamed
//!   over the target (so a reader never sees half a file, and the symlink
//!   stays a symlink). Its directory must accept a new file (probed);
//! - an inherited descriptor (`/dev/stdout`, `/dev/stderr`, `/dev/fd/N`,
//!   `/proc/self/fd/N`, as process substitution passes): written through a
//!   duplicate of that descriptor, keeping its offset and append mode;
//! - any other special file (device, FIFO): opened for writing at
//!   start and written in place; a FIFO without a reader is waited for, and
//!   the wait ends at once on Ctrl+C.
//!
//! Outputs are compared with every input and with each other by device and
//! inode (so symlinks, `./` and hard links are seen through) or, for files
//! still to be created, by canonical path; a clash is an input error (exit 2).
//! When a regular file cannot be written at the end, the document is saved
//! in the temporary directory instead and the error says where: a run is
//! never lost.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::FromRawFd;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::Files;
use crate::error::{Error, Result};
use crate::output::results;
use crate::record::event::Event;
use crate::stop::Stop;

/// Device and inode of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
}

impl Identity {
    fn of(m: &std::fs::Metadata) -> Identity {
        Identity {
            dev: m.dev(),
            ino: m.ino(),
        }
    }
}

/// Whether any of `files` is this process's standard output (`/dev/stdout`,
/// `/dev/fd/1`, or the file stdout is redirected to): the tables then go to
/// stderr, so that the file on stdout stays whole.
pub fn any_is_stdout(files: &Files) -> bool {
    let Ok(out) = std::fs::metadata("/proc/self/fd/1") else {
        return false;
    };
    // A device (a terminal, /dev/null) is shared by design: only a file or
    // a pipe that stdout also goes to counts.
    if std::os::unix::fs::FileTypeExt::is_char_device(&out.file_type()) {
        return false;
    }
    let out = Identity::of(&out);
    files.all().into_iter().any(|(_, p)| {
        std::fs::metadata(p).is_ok_and(|m| {
            let id = Identity::of(&m);
            id.dev == out.dev && id.ino == out.ino
        })
    })
}

/// An input file, for the clash check.
#[derive(Clone, Debug)]
pub struct Input {
    what: String,
    id: Option<Identity>,
    canonical: Option<PathBuf>,
}

impl Input {
    /// The input `path`, described as `what` in messages ("the workload").
    pub fn new(what: &str, path: &Path) -> Input {
        Input {
            what: what.to_string(),
            id: std::fs::metadata(path).ok().map(|m| Identity::of(&m)),
            canonical: std::fs::canonicalize(path).ok(),
        }
    }
}

enum Target {
    /// A regular file: temporary sibling + rename over `path` (the symlink
    /// target, resolved).
    Regular(PathBuf),
    /// A special file or inherited descriptor, written in place.
    Direct { file: File, shared: bool },
}

struct Output {
    flag: &'static str,
    shown: PathBuf,
    target: Target,
    id: Option<Identity>,
    canonical: Option<PathBuf>,
}

/// The outputs of a run, resolved and checked.
pub struct Outputs {
    items: Vec<Output>,
}

/// How long to wait for a FIFO's reader before saying so.
const FIFO_NOTICE: Duration = Duration::from_secs(1);

impl Outputs {
    /// Resolve and check every output of `files` against `inputs` and each
    /// other; open special files (waiting for a FIFO's reader until `stop`).
    pub fn prepare(files: &Files, inputs: &[Input], stop: &Stop) -> Result<Outputs> {
        let mut items: Vec<Output> = Vec::new();
        for (flag, path) in files.all() {
            let out = resolve(flag, path, stop)?;
            for other in &items {
                if clash(&out, other.id, other.canonical.as_deref()) && !both_shared(&out, other) {
                    return Err(Error::usage(format!(
                        "{flag} {} and {} {} are the same file; pass different files",
                        out.shown.display(),
                        other.flag,
                        other.shown.display()
                    )));
                }
            }
            items.push(out);
        }
        let outputs = Outputs { items };
        outputs.check_inputs(inputs)?;
        Ok(outputs)
    }

    /// Refuse an output that is one of `inputs` (a later-known input, such
    /// as a tokenizer named by the server's model, is checked here too).
    pub fn check_inputs(&self, inputs: &[Input]) -> Result<()> {
        for out in &self.items {
            if matches!(out.target, Target::Direct { shared: true, .. }) {
                continue;
            }
            if let Some(input) = inputs
                .iter()
                .find(|i| clash(out, i.id, i.canonical.as_deref()))
            {
                return Err(Error::usage(format!(
                    "{} {} is {}: trie would overwrite it; pass another path",
                    out.flag,
                    out.shown.display(),
                    input.what
                )));
            }
        }
        Ok(())
    }

    /// The event log (`--events`), created (truncated) now, if asked for.
    pub fn event_log(&mut self) -> Result<Option<EventLog>> {
        let Some(i) = self.items.iter().position(|o| o.flag == "--events") else {
            return Ok(None);
        };
        let out = self.items.remove(i);
        let shown = out.shown.display().to_string();
        let (file, regular) = match out.target {
            Target::Regular(path) => (
                File::create(&path).map_err(|e| {
                    Error::usage(format!(
                        "--events {shown}: cannot create it ({e}); pass a writable path"
                    ))
                })?,
                true,
            ),
            Target::Direct { file, .. } => (file, false),
        };
        Ok(Some(EventLog {
            tag: None,
            file: Some(file),
            regular,
            written: 0,
            path: shown,
            error: None,
        }))
    }

    /// Write the files `render` gives for each flag (`None`: not this one);
    /// the errors, each naming its file (and where the document was saved
    /// instead). Regular files are replaced atomically on every call;
    /// special files (FIFOs, stdout, devices) take one write, so they are
    /// written only when `last`.
    pub fn write(&mut self, render: &dyn Fn(&str) -> Option<String>, last: bool) -> Vec<String> {
        let mut errors = Vec::new();
        for out in &mut self.items {
            if !last && matches!(out.target, Target::Direct { .. }) {
                continue;
            }
            // A bug rendering one file (a panic) costs that file, not the others.
            let rendered =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| render(out.flag)));
            let bytes = match rendered {
                Ok(Some(bytes)) => bytes,
                Ok(None) => continue,
                Err(panic) => {
                    errors.push(format!(
                        "{} {}: internal error (a bug in trie) rendering it: {}",
                        out.flag,
                        out.shown.display(),
                        crate::error::panic_message(&panic)
                    ));
                    continue;
                }
            };
            let shown = out.shown.display();
            let written = match &mut out.target {
                Target::Regular(path) => write_atomic(path, bytes.as_bytes()),
                Target::Direct { file, .. } => {
                    file.write_all(bytes.as_bytes()).and_then(|_| file.flush())
                }
            };
            match written {
                Ok(()) => log::info!("wrote {} {shown}", out.flag),
                Err(e) => {
                    let saved = save_elsewhere(out.flag, &out.shown, bytes.as_bytes());
                    errors.push(format!("{} {shown}: cannot write it: {e}{saved}", out.flag));
                }
            }
        }
        errors
    }
}

/// Whether two outputs may share a file: both inherited descriptors or
/// character devices (`--csv /dev/stdout --output-metrics /dev/stdout`,
/// `/dev/null` twice).
fn both_shared(a: &Output, b: &Output) -> bool {
    matches!(a.target, Target::Direct { shared: true, .. })
        && matches!(b.target, Target::Direct { shared: true, .. })
}

fn clash(out: &Output, id: Option<Identity>, canonical: Option<&Path>) -> bool {
    match (out.id, id) {
        (Some(a), Some(b)) => a == b,
        _ => out.canonical.is_some() && out.canonical.as_deref() == canonical,
    }
}

/// The descriptor a path names directly, if it is one of ours.
fn inherited_fd(path: &Path) -> Option<i32> {
    let s = path.to_str()?;
    match s {
        "/dev/stdout" => return Some(1),
        "/dev/stderr" => return Some(2),
        _ => {}
    }
    let pid = std::process::id().to_string();
    let rest = s
        .strip_prefix("/dev/fd/")
        .or_else(|| s.strip_prefix("/proc/self/fd/"))
        .or_else(|| s.strip_prefix("/proc/thread-self/fd/"))
        .or_else(|| {
            s.strip_prefix("/proc/")
                .and_then(|r| r.strip_prefix(pid.as_str()))
                .and_then(|r| r.strip_prefix("/fd/"))
        })?;
    rest.parse().ok()
}

fn resolve(flag: &'static str, path: &Path, stop: &Stop) -> Result<Output> {
    let shown = path.to_path_buf();
    let s = shown.display();
    if let Some(fd) = inherited_fd(path) {
        // SAFETY: fcntl/dup on a number; failure is reported, not assumed.
        let dup = unsafe {
            if libc::fcntl(fd, libc::F_GETFD) == -1 {
                -1
            } else {
                libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3)
            }
        };
        if dup < 0 {
            return Err(Error::usage(format!(
                "{flag} {s}: descriptor {fd} is not open; pass a file path"
            )));
        }
        // SAFETY: `dup` is a fresh descriptor this File now owns.
        let file = unsafe { File::from_raw_fd(dup) };
        let id = file.metadata().ok().map(|m| Identity::of(&m));
        return Ok(Output {
            flag,
            shown,
            target: Target::Direct { file, shared: true },
            id,
            canonical: None,
        });
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(Error::usage(format!(
            "{flag} {s} is a directory; pass a file path"
        ))),
        Ok(m) if m.is_file() => {
            let target = std::fs::canonicalize(path)
                .map_err(|e| Error::usage(format!("{flag} {s}: cannot resolve it ({e})")))?;
            if !writable(&target) {
                return Err(Error::usage(format!(
                    "{flag} {s} exists and is not writable; pass another path"
                )));
            }
            probe_dir(flag, &shown, &target)?;
            Ok(Output {
                flag,
                shown,
                id: Some(Identity::of(&m)),
                canonical: Some(target.clone()),
                target: Target::Regular(target),
            })
        }
        Ok(m) => {
            let file = open_special(flag, path, m.file_type().is_fifo(), stop)?;
            let shared = m.file_type().is_char_device();
            Ok(Output {
                flag,
                shown,
                target: Target::Direct { file, shared },
                id: Some(Identity::of(&m)),
                canonical: None,
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A new file, possibly behind a dangling symlink.
            let target = follow_links(path).map_err(|e| {
                Error::usage(format!(
                    "{flag} {s}: cannot resolve it ({e}); pass a file path"
                ))
            })?;
            let dir = parent(&target);
            if !dir.is_dir() {
                return Err(Error::usage(format!(
                    "{flag} {s}: directory {} does not exist; create it or pass another path",
                    dir.display()
                )));
            }
            probe_dir(flag, &shown, &target)?;
            let canonical = std::fs::canonicalize(dir)
                .ok()
                .zip(target.file_name())
                .map(|(d, n)| d.join(n));
            Ok(Output {
                flag,
                shown,
                target: Target::Regular(target),
                id: None,
                canonical,
            })
        }
        Err(e) => Err(Error::usage(format!(
            "{flag} {s}: cannot use it ({e}); pass a writable file path"
        ))),
    }
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// `path` with every symlink of its last component followed (its target
/// may not exist yet).
fn follow_links(path: &Path) -> std::io::Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let to = std::fs::read_link(&p)?;
                p = if to.is_absolute() {
                    to
                } else {
                    parent(&p).join(to)
                };
            }
            _ => return Ok(p),
        }
    }
    Err(std::io::Error::other("too many levels of symbolic links"))
}

fn writable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

/// Prove the target's directory accepts a new file (the temporary sibling).
fn probe_dir(flag: &str, shown: &Path, target: &Path) -> Result<()> {
    let dir = parent(target);
    let probe = dir.join(format!(".trie-probe-{}", std::process::id()));
    match OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(Error::usage(format!(
            "{flag} {}: cannot create files in {} ({e}); pass a writable path",
            shown.display(),
            dir.display()
        ))),
    }
}

/// Make sure charts can be written into `dir` (`what` names it in errors:
/// `--plot`): created if missing, refused when it is not a directory or
/// not writable, before anything is sent.
pub fn plot_dir(what: &str, dir: &Path, others: &Files) -> Result<()> {
    let shown = dir.display();
    if dir.as_os_str().is_empty() {
        return Err(Error::usage(format!(
            "{what} is empty; pass a directory for the charts"
        )));
    }
    if dir.exists() && !dir.is_dir() {
        return Err(Error::usage(format!(
            "{what} {shown}: not a directory; pass a directory (created if missing)"
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| {
        Error::usage(format!(
            "{what} {shown}: cannot create it ({e}); pass a writable directory"
        ))
    })?;
    probe_dir(what, dir, &dir.join("report.html"))?;
    // The charts' names must not be another output's.
    let here = std::fs::canonicalize(dir).ok();
    for (flag, path) in others.all() {
        let name = path.file_name().map(|n| n.to_string_lossy().to_string());
        let chart = name
            .as_deref()
            .is_some_and(|n| n == "report.html" || n.ends_with(".svg"));
        let parent = std::fs::canonicalize(parent(path)).ok();
        if chart && parent.is_some() && parent == here {
            return Err(Error::usage(format!(
                "{what} {shown} would overwrite {flag} {}; pass another directory or file",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Open a device or FIFO for writing. A FIFO without a reader is
/// waited for (it cannot be opened until one comes) until `stop`.
fn open_special(flag: &str, path: &Path, fifo: bool, stop: &Stop) -> Result<File> {
    let started = Instant::now();
    let mut told = false;
    loop {
        match OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
        {
            Ok(file) => {
                use std::os::unix::io::AsRawFd;
                let fd = file.as_raw_fd();
                // SAFETY: clearing O_NONBLOCK on our own descriptor.
                unsafe {
                    let flags = libc::fcntl(fd, libc::F_GETFL);
                    if flags >= 0 {
                        libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
                    }
                }
                return Ok(file);
            }
            Err(e) if fifo && e.raw_os_error() == Some(libc::ENXIO) => {
                if !told && started.elapsed() >= FIFO_NOTICE {
                    log::info!(
                        "{flag} {}: waiting for a reader of this FIFO (Ctrl+C stops)",
                        path.display()
                    );
                    told = true;
                }
                if !stop.sleep(Duration::from_millis(20)) {
                    return Err(Error::Interrupted);
                }
            }
            Err(e) => {
                return Err(Error::usage(format!(
                    "{flag} {}: cannot open it for writing ({e}); pass a writable path",
                    path.display()
                )));
            }
        }
    }
}

/// Write `bytes` to the regular file `path` atomically: a temporary file in
/// the same directory, synced, then renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A name nobody can guess, created only if new (never through a planted
    // symlink), with the permissions of the file it replaces.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_file_name(format!(".{name}.tmp-{}-{nonce:x}-{n}", std::process::id()));
    let r = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        if let Ok(m) = std::fs::metadata(path) {
            f.set_permissions(m.permissions())?;
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// Save a file that could not be written where asked in the temporary
/// directory; the message tail saying where (or that it could not).
fn save_elsewhere(flag: &str, shown: &Path, bytes: &[u8]) -> String {
    let name: String = shown
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            _ => None,
        })
        .next_back()
        .unwrap_or_else(|| flag.trim_start_matches('-').to_string());
    let rescue = std::env::temp_dir().join(format!("trie-{}-{name}", std::process::id()));
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&rescue)
        .and_then(|mut f| f.write_all(bytes).and_then(|_| f.sync_all()))
    {
        Ok(()) => format!("; saved to {} instead", rescue.display()),
        Err(e) => {
            let _ = std::fs::remove_file(&rescue);
            format!("; could not save it to {} either ({e})", rescue.display())
        }
    }
}

/// The event log: one whole line per request event, written as it comes.
/// A write error ends the log and is reported at the end (exit 1); on a
/// regular file a line that was only partly written is cut off again, so
/// the log never ends in a torn line.
pub struct EventLog {
    /// In a sweep: the (point, trial) each line carries.
    pub tag: Option<(usize, u32)>,
    file: Option<File>,
    regular: bool,
    written: u64,
    path: String,
    error: Option<String>,
}

impl EventLog {
    /// Log `ev` if it is a request event.
    pub fn write(&mut self, ev: &Event) {
        let (Some(file), Some(mut line)) = (self.file.as_mut(), results::event_json(ev, self.tag))
        else {
            return;
        };
        line.push('\n');
        match file.write_all(line.as_bytes()) {
            Ok(()) => self.written += line.len() as u64,
            Err(e) => {
                let cut = if self.regular {
                    file.set_len(self.written).is_ok()
                } else {
                    false
                };
                log::error!(
                    "--events {}: write failed ({e}); the event log stops here{}",
                    self.path,
                    if cut {
                        " (the partial line was removed)"
                    } else {
                        ""
                    }
                );
                self.error = Some(format!(
                    "--events {}: write failed after {} bytes: {e}",
                    self.path, self.written
                ));
                self.file = None;
            }
        }
    }

    /// The write error, if one ended the log.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_file_keeps_its_permissions_and_no_temporary_is_left() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("trie-wa-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("r.json");
        std::fs::write(&p, "old").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        write_atomic(&p, b"new").unwrap();
        write_atomic(&p, b"newer").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "newer");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn descriptors_are_recognised_by_name() {
        let me = format!("/proc/{}/fd/7", std::process::id());
        for (p, fd) in [
            ("/dev/stdout", Some(1)),
            ("/dev/stderr", Some(2)),
            ("/dev/fd/63", Some(63)),
            ("/proc/self/fd/5", Some(5)),
            (me.as_str(), Some(7)),
            ("/proc/1/fd/5", None),
            ("/dev/null", None),
            ("out/dev/fd/3", None),
        ] {
            assert_eq!(inherited_fd(Path::new(p)), fd, "{p}");
        }
    }
}
