//! trie's own TCP transport: a read costs one `read` syscall.
//!
//! ureq's TCP transport re-arms the socket's receive timeout before every
//! read (its global timeout shrinks as time passes), so every streamed
//! token cost a `setsockopt` and a `read`. Here no read or write timeout is
//! ever set on the socket. Each connection registers its deadline (the
//! request's, or a shorter [`ReadWindow`]) with one process-wide watchdog
//! thread, only when the deadline moves; when a deadline passes, the
//! watchdog shuts the socket down, which wakes the blocked read, and the
//! read reports a timeout. Reusing a kept-alive connection probes it with
//! one non-blocking `recv(MSG_PEEK)` instead of three syscalls.
//!
//! TLS (`https`) runs on top of this transport unchanged; trie ignores
//! proxy settings (a benchmark goes straight to its endpoint).

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, LazyBuffers, NextTimeout, ShutdownHandle, Transport,
};

/// A deadline may be early by at most this much before it is registered
/// again (reads of one request compute it anew from ureq's shrinking
/// budget, a few microseconds apart).
const SLACK: Duration = Duration::from_millis(2);

thread_local! {
    /// While set, no read or write on this thread's connections waits past it.
    static READ_DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
    /// The guard of the connection this thread last used (weakly: a
    /// dropped connection closes at once).
    static CURRENT: RefCell<Weak<Guard>> = const { RefCell::new(Weak::new()) };
}

/// Bounds every read of this thread's connections to a window from now on,
/// until dropped: how a response's tail is drained without letting a
/// server hold the slot.
pub struct ReadWindow(bool);

impl ReadWindow {
    /// No window yet.
    pub fn closed() -> ReadWindow {
        ReadWindow(false)
    }

    /// Bound reads to `d` from now, or to the bound set before if sooner.
    pub fn open(&mut self, d: Duration) {
        let at = Instant::now() + d;
        READ_DEADLINE.with(|c| c.set(Some(c.get().filter(|&b| self.0 && b < at).unwrap_or(at))));
        self.0 = true;
    }
}

impl Drop for ReadWindow {
    fn drop(&mut self) {
        if self.0 {
            READ_DEADLINE.with(|c| c.set(None));
        }
    }
}

/// One request on this thread: dropped, its deadline (and any window's) no
/// longer applies, so a kept-alive connection idle past it in the pool is
/// not shut down. Every request a client makes holds one.
pub struct Request(());

impl Request {
    /// A request starts.
    pub fn start() -> Request {
        Request(())
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        CURRENT.with(|c| {
            if let Some(g) = c.borrow().upgrade() {
                g.disarm();
            }
        });
    }
}

/// Connections alive (their guards), for compacting the watchdog's heap.
static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// What a connection shares with the watchdog and the stop.
#[derive(Debug)]
struct Guard {
    /// The socket, shared with the watchdog and the stop (through an
    /// `Arc`, so it is closed only when neither holds it: a shutdown can
    /// never reach a reused descriptor).
    stream: TcpStream,
    /// Bumped on every (re)registration and disarm: older watchdog entries
    /// are stale.
    generation: AtomicU64,
    /// The watchdog shut the socket down at a deadline.
    fired: AtomicBool,
}

impl Guard {
    fn new(stream: TcpStream) -> Guard {
        LIVE.fetch_add(1, Ordering::Relaxed);
        Guard {
            stream,
            generation: AtomicU64::new(0),
            fired: AtomicBool::new(false),
        }
    }

    /// End the registered deadline: the watchdog no longer fires it (a
    /// firing compares and swaps this generation, so the two never both
    /// win).
    fn disarm(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ShutdownHandle for Guard {
    fn shutdown(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// One watched deadline.
struct Entry {
    at: Instant,
    generation: u64,
    guard: Weak<Guard>,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Entry) -> bool {
        self.at == o.at
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Entry) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Entry) -> std::cmp::Ordering {
        self.at.cmp(&o.at)
    }
}

/// The process's deadline watchdog: one thread that owns a heap of
/// deadlines, fed over a lock-free channel. Registering a deadline wakes the
/// thread only when it is due before the thread's next wake-up, or when
/// [`INBOX`] entries wait. A request's own deadline is later than the ones
/// already watched; the short drain window after `[DONE]` is registered
/// only when the body's end has not come with it (a server that writes
/// its last chunk apart), so with most servers a request costs the
/// watchdog no context switch of its own.
struct Watchdog {
    entries: Sender<Entry>,
    /// When the thread sleeps until, in nanoseconds after `base`
    /// ([`AWAKE`]: it is not asleep; `u64::MAX`: until an entry comes).
    sleeps_until: AtomicU64,
    base: Instant,
    thread: Option<std::thread::Thread>,
}

/// Entries that wait before the watchdog is woken to take them.
const INBOX: usize = 64;

/// [`Watchdog::sleeps_until`] while the thread is awake.
const AWAKE: u64 = 0;

fn watchdog() -> &'static Watchdog {
    static W: OnceLock<Watchdog> = OnceLock::new();
    W.get_or_init(|| {
        let (entries, rx) = crossbeam_channel::unbounded();
        let spawned = std::thread::Builder::new()
            .name("deadlines".into())
            .spawn(move || watch(watchdog(), &rx));
        if let Err(e) = &spawned {
            log::error!("cannot start the deadline thread ({e}): request timeouts will not fire");
        }
        Watchdog {
            entries,
            sleeps_until: AtomicU64::new(AWAKE),
            base: Instant::now(),
            thread: spawned.ok().map(|h| h.thread().clone()),
        }
    })
}

impl Watchdog {
    /// `at` in nanoseconds after `base`, never [`AWAKE`].
    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos())
            .unwrap_or(u64::MAX - 1)
            .max(1)
    }

    /// Watch `guard` until `at`; returns the entry's generation. Takes no
    /// lock (the channel is lock-free) and wakes the thread only for a
    /// deadline due before the one it sleeps until, or when [`INBOX`]
    /// entries wait (each request adds one: they never pile up).
    fn arm(&self, guard: &Arc<Guard>, at: Instant) -> u64 {
        let generation = guard.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let _ = self.entries.send(Entry {
            at,
            generation,
            guard: Arc::downgrade(guard),
        });
        let sleeps = self.sleeps_until.load(Ordering::SeqCst);
        if sleeps != AWAKE
            && (self.nanos(at) < sleeps || self.entries.len() >= INBOX)
            && let Some(t) = &self.thread
        {
            t.unpark();
        }
        generation
    }
}

/// The watchdog thread: fire what is due, sleep until the next deadline
/// or until woken for an entry.
fn watch(w: &Watchdog, entries: &Receiver<Entry>) {
    let mut heap: BinaryHeap<Reverse<Entry>> = BinaryHeap::new();
    loop {
        w.sleeps_until.store(AWAKE, Ordering::SeqCst);
        heap.extend(entries.try_iter().map(Reverse));
        fire(&mut heap);
        let next = heap.peek().map(|Reverse(e)| e.at);
        w.sleeps_until
            .store(next.map_or(u64::MAX, |at| w.nanos(at)), Ordering::SeqCst);
        // An entry sent while awake was compared with nothing: take it now.
        // One sent from here on wakes the thread if it must (an unpark
        // before the park makes the park return at once).
        if !entries.is_empty() {
            continue;
        }
        match next {
            Some(at) => std::thread::park_timeout(at.saturating_duration_since(Instant::now())),
            None => std::thread::park(),
        }
    }
}

/// Fire the due deadlines of `heap`; drop stale ones when they pile up.
fn fire(heap: &mut BinaryHeap<Reverse<Entry>>) {
    let now = Instant::now();
    while heap.peek().is_some_and(|Reverse(e)| e.at <= now) {
        let Reverse(e) = heap.pop().expect("peeked");
        let Some(g) = e.guard.upgrade() else { continue };
        // Only the deadline still registered fires, and a disarm that
        // came first wins.
        let current = g.generation.compare_exchange(
            e.generation,
            e.generation + 1,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
        if current.is_ok() {
            g.fired.store(true, Ordering::Release);
            let _ = g.stream.shutdown(Shutdown::Both);
        }
    }
    // Moved and disarmed deadlines stay in the heap until their time;
    // past a few per live connection, drop them (amortized O(1)).
    if heap.len() > 64 && heap.len() > 4 * LIVE.load(Ordering::Relaxed) {
        heap.retain(|Reverse(e)| {
            e.guard
                .upgrade()
                .is_some_and(|g| g.generation.load(Ordering::Acquire) == e.generation)
        });
    }
}

/// Connects plain TCP for every request (TLS wraps it after).
#[derive(Debug)]
pub struct DirectConnector;

impl Connector<()> for DirectConnector {
    type Out = Direct;

    fn connect(
        &self,
        details: &ConnectionDetails,
        _chained: Option<()>,
    ) -> Result<Option<Direct>, ureq::Error> {
        // One budget for every address of the host, not one each.
        let deadline = (!details.timeout.after.is_not_happening())
            .then(|| Instant::now() + *details.timeout.after);
        if details.addrs.is_empty() {
            return Err(ureq::Error::HostNotFound);
        }
        let stream = connect(&details.addrs, deadline).map_err(|e| {
            if e.kind() == std::io::ErrorKind::TimedOut {
                ureq::Error::Timeout(ureq::Timeout::Connect)
            } else {
                e.into()
            }
        })?;
        let watched = Watched::new(stream);
        (details.register_shutdown)(watched.handle())?;
        let config = details.config;
        Ok(Some(Direct {
            watched,
            buffers: LazyBuffers::new(config.input_buffer_size(), config.output_buffer_size()),
        }))
    }
}

/// A socket whose deadlines the watchdog enforces: what ureq's [`Direct`]
/// and trie's own HTTP/1.1 path ([`crate::net::http1`]) share.
#[derive(Debug)]
pub struct Watched {
    guard: Arc<Guard>,
    /// The deadline registered with the watchdog, and its generation.
    armed: Option<(Instant, u64)>,
}

/// The deadline of an I/O call passed before it began.
#[derive(Debug)]
pub struct Expired;

impl Watched {
    /// Watch `stream` (which no one else reads or writes).
    pub fn new(stream: TcpStream) -> Watched {
        Watched {
            guard: Arc::new(Guard::new(stream)),
            armed: None,
        }
    }

    /// What shuts the socket down from another thread (a stop).
    pub fn handle(&self) -> Weak<dyn ShutdownHandle> {
        Arc::downgrade(&self.guard) as Weak<dyn ShutdownHandle>
    }

    /// Whether the watchdog shut the socket down at a deadline.
    pub fn fired(&self) -> bool {
        self.guard.fired.load(Ordering::Acquire)
    }

    /// Register the deadline of an I/O call: `budget` (the request's), or
    /// this thread's read window when sooner; `Err` when it has passed.
    /// Costs a clock read and an atomic load unless the deadline moved.
    pub fn watch(&mut self, budget: Option<Instant>) -> Result<(), Expired> {
        let now = Instant::now();
        let window = READ_DEADLINE.with(Cell::get);
        let at = match (budget, window) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if at.is_some_and(|at| at <= now) {
            return Err(Expired);
        }
        CURRENT.with(|c| {
            let mut c = c.borrow_mut();
            if !std::ptr::eq(c.as_ptr(), Arc::as_ptr(&self.guard)) {
                *c = Arc::downgrade(&self.guard);
            }
        });
        // What is registered still stands only if nothing disarmed it since.
        let live = self
            .armed
            .filter(|(_, g)| *g == self.guard.generation.load(Ordering::Acquire))
            .map(|(at, _)| at);
        match (at, live) {
            // Within the slack of the registered one: nothing to do.
            (Some(at), Some(armed)) if at + SLACK >= armed && at <= armed + SLACK => {}
            (Some(at), _) => {
                let generation = watchdog().arm(&self.guard, at);
                self.armed = Some((at, generation));
            }
            (None, Some(_)) => {
                self.guard.disarm();
                self.armed = None;
            }
            (None, None) => self.armed = None,
        }
        Ok(())
    }

    /// One `read` into `buf`; a read the watchdog broke off is `TimedOut`.
    pub fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match (&self.guard.stream).read(buf) {
                Ok(0) if self.fired() => return Err(timed_out()),
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) if self.fired() => return Err(timed_out()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Write all of `bytes`; a write the watchdog broke off is `TimedOut`.
    pub fn write_all(&self, bytes: &[u8]) -> std::io::Result<()> {
        self.write_parts(&mut [std::io::IoSlice::new(bytes)])
    }

    /// Write all of `parts`, in order, with as few `writev` calls as the
    /// socket allows (one, usually): a request's head and body go out
    /// together without being copied into one buffer.
    pub fn write_parts(&self, mut parts: &mut [std::io::IoSlice<'_>]) -> std::io::Result<()> {
        std::io::IoSlice::advance_slices(&mut parts, 0);
        while !parts.is_empty() {
            match (&self.guard.stream).write_vectored(parts) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => std::io::IoSlice::advance_slices(&mut parts, n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) if self.fired() => return Err(timed_out()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Whether a kept-alive connection can carry another request: one
    /// non-blocking peek; nothing waiting means open; bytes nobody asked
    /// for, an end of stream or an error mean closed.
    pub fn is_open(&self) -> bool {
        if self.fired() {
            return false;
        }
        let mut b = [0u8; 1];
        // SAFETY: a valid socket and a one-byte buffer that outlives the call.
        let n = unsafe {
            libc::recv(
                self.guard.stream.as_raw_fd(),
                b.as_mut_ptr().cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.guard.disarm();
    }
}

/// The error of an I/O call whose request's time limit passed (`--timeout`,
/// or `--connect-timeout` for the preflight's requests).
pub fn timed_out() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "the request's time limit ran out",
    )
}

/// Connect to the first of `addrs` that answers, within one budget for
/// all of them (none: no limit), with Nagle off.
pub fn connect(
    addrs: &[std::net::SocketAddr],
    deadline: Option<Instant>,
) -> std::io::Result<TcpStream> {
    let mut last = None;
    for addr in addrs {
        let attempt = match deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) => TcpStream::connect_timeout(addr, left.max(Duration::from_millis(10))),
                None => break,
            },
            None => TcpStream::connect(addr),
        };
        match attempt {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => e,
        None if deadline.is_some() => std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no answer within --connect-timeout",
        ),
        None => std::io::Error::new(std::io::ErrorKind::NotFound, "the host has no address"),
    })
}

/// A connection of ureq's whose deadlines the watchdog enforces.
#[derive(Debug)]
pub struct Direct {
    watched: Watched,
    buffers: LazyBuffers,
}

impl Direct {
    /// Register the deadline of an I/O call given `timeout` (and this
    /// thread's read window); `Err` when it has passed already.
    fn deadline(&mut self, timeout: &NextTimeout) -> Result<(), ureq::Error> {
        let budget = (!timeout.after.is_not_happening()).then(|| Instant::now() + *timeout.after);
        self.watched
            .watch(budget)
            .map_err(|Expired| ureq::Error::Timeout(timeout.reason))
    }

    /// An I/O error, or the timeout it really is.
    fn failed(e: std::io::Error, reason: ureq::Timeout) -> ureq::Error {
        if e.kind() == std::io::ErrorKind::TimedOut {
            ureq::Error::Timeout(reason)
        } else {
            e.into()
        }
    }
}

impl Transport for Direct {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let timeout = timeout.for_write();
        self.deadline(&timeout)?;
        let output = &self.buffers.output()[..amount];
        self.watched
            .write_all(output)
            .map_err(|e| Direct::failed(e, timeout.reason))
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        let timeout = timeout.for_read();
        self.deadline(&timeout)?;
        let input = self.buffers.input_append_buf();
        let amount = self
            .watched
            .read(input)
            .map_err(|e| Direct::failed(e, timeout.reason))?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.watched.is_open()
    }

    fn is_tls(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn the_watchdog_shuts_a_blocked_read_at_its_deadline_and_stale_ones_never() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, _) = listener.accept().unwrap();
        let guard = Arc::new(Guard::new(client.try_clone().unwrap()));
        // A deadline that is moved later is not the one that fires.
        watchdog().arm(&guard, Instant::now() + Duration::from_millis(50));
        watchdog().arm(&guard, Instant::now() + Duration::from_millis(250));
        let t = Instant::now();
        let n = (&client).read(&mut [0u8; 16]).unwrap_or(0);
        let took = t.elapsed();
        assert_eq!(n, 0);
        assert!(guard.fired.load(Ordering::Acquire));
        assert!(
            took >= Duration::from_millis(240) && took < Duration::from_secs(2),
            "{took:?}"
        );
        // A disarmed deadline never fires.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let guard = Arc::new(Guard::new(client.try_clone().unwrap()));
        watchdog().arm(&guard, Instant::now() + Duration::from_millis(30));
        guard.disarm();
        std::thread::sleep(Duration::from_millis(100));
        server.write_all(b"ok").unwrap();
        let mut buf = [0u8; 2];
        (&client).read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ok");
        assert!(!guard.fired.load(Ordering::Acquire));
    }

    #[test]
    fn a_deadline_due_before_the_watchdogs_next_wake_up_wakes_it() {
        // The watchdog sleeps until the far deadline; a nearer one
        // registered after must still fire on time.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let far = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let near = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let _accepted: Vec<_> = listener.incoming().take(2).collect();
        let far = Arc::new(Guard::new(far));
        watchdog().arm(&far, Instant::now() + Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(50));
        let client = near.try_clone().unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let near = Arc::new(Guard::new(near));
        let t = Instant::now();
        watchdog().arm(&near, t + Duration::from_millis(100));
        let n = (&client).read(&mut [0u8; 4]).unwrap_or(0);
        assert_eq!(n, 0);
        assert!(near.fired.load(Ordering::Acquire));
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert!(!far.fired.load(Ordering::Acquire));
        far.disarm();
    }

    #[test]
    fn the_watchdogs_inbox_stays_small_whatever_the_deadlines() {
        // Far deadlines never wake the watchdog for their time; it is
        // woken to take them in batches, so they do not pile up.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, _) = listener.accept().unwrap();
        let guard = Arc::new(Guard::new(client));
        // Let the watchdog fall asleep until a far deadline first.
        watchdog().arm(&guard, Instant::now() + Duration::from_secs(3000));
        std::thread::sleep(Duration::from_millis(50));
        for _ in 0..10 * INBOX {
            watchdog().arm(&guard, Instant::now() + Duration::from_secs(3600));
        }
        std::thread::sleep(Duration::from_millis(100));
        let left = watchdog().entries.len();
        assert!(left <= INBOX, "{left} entries wait in the inbox");
        guard.disarm();
    }

    #[test]
    fn a_request_right_after_a_finished_one_is_still_watched() {
        // Two requests on one connection within the slack: the first one's
        // end disarms its deadline, so the second must register its own.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, _) = listener.accept().unwrap();
        // Only so that a broken watchdog fails the test instead of hanging it.
        client
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let mut d = Direct {
            watched: Watched::new(client),
            buffers: LazyBuffers::new(1024, 1024),
        };
        let timeout = || NextTimeout {
            after: Duration::from_millis(300).into(),
            reason: ureq::Timeout::Global,
            per_read: None,
            per_write: None,
        };
        d.deadline(&timeout()).unwrap();
        drop(Request::start());
        let t = Instant::now();
        let read = d.await_input(timeout());
        assert!(
            matches!(read, Err(ureq::Error::Timeout(_))),
            "{read:?} after {:?}",
            t.elapsed()
        );
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
}
