//! Deadlines of the data path, kept by each worker without locks.
//!
//! Every request arms timeouts that almost never fire: hyper's header-read
//! timeout while its connection waits for the next request, and the
//! upstream's deadline while the proxy waits for the response. tokio's timer
//! takes its driver's lock and walks its wheel to arm a sleep, and again to
//! drop it: about 600 instructions per timeout (callgrind), for two per
//! request. On a worker a [`Deadline`] is instead a slot in the worker's own
//! slab: arming it writes the slot, dropping it frees the slot, with no lock
//! and no clock read. One task per worker, the sweeper, sleeps on tokio's
//! timer until the earliest deadline it knows of and wakes those due.
//!
//! A deadline fires no sooner than its instant and at most [`SLACK`] after
//! it (sweeps are at least that far apart, so a thousand connections timing
//! out over a second cost a few hundred sweeps, not a thousand). Off a worker
//! (the control path, unit tests) a deadline is tokio's `Sleep`.

use slab::Slab;
use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// How late a deadline may fire.
pub const SLACK: Duration = Duration::from_millis(5);

thread_local! {
    static WHEEL: RefCell<Option<Wheel>> = const { RefCell::new(None) };
}

/// The deadlines armed on one worker.
struct Wheel {
    /// Tells this wheel from other threads' (a deadline remembers where it was armed).
    id: u32,
    entries: Slab<Entry>,
    /// When the sweeper looks next; `None` while nothing is armed.
    next: Option<Instant>,
    /// The sweeper's waker, for a deadline sooner than `next`.
    sweeper: Option<Waker>,
}

struct Entry {
    at: Instant,
    /// Whom to wake; taken when fired.
    waker: Option<Waker>,
    fired: bool,
}

impl Wheel {
    /// Makes sure the sweeper looks by `at` (within the slack); returns
    /// its waker when it must wake to plan again.
    fn plan(&mut self, at: Instant) -> Option<Waker> {
        if self.next.is_some_and(|next| next <= at + SLACK) {
            return None;
        }
        self.next = Some(at);
        self.sweeper.take()
    }

    /// Fires the entries due at `now`; plans the next sweep.
    fn sweep(&mut self, now: Instant, due: &mut Vec<Waker>) {
        let mut earliest: Option<Instant> = None;
        for (_, e) in self.entries.iter_mut().filter(|(_, e)| !e.fired) {
            if e.at <= now {
                e.fired = true;
                due.extend(e.waker.take());
            } else {
                earliest = Some(earliest.map_or(e.at, |t| t.min(e.at)));
            }
        }
        self.next = earliest.map(|at| at.max(now + SLACK));
    }
}

/// Makes this thread a worker's: deadlines armed on it from now on are kept
/// in its wheel. The future returned is the wheel's sweeper; it must be
/// spawned on this thread's runtime, or they never fire.
pub fn install() -> impl Future<Output = ()> {
    static IDS: AtomicU32 = AtomicU32::new(1);
    let id = IDS.fetch_add(1, Ordering::Relaxed);
    WHEEL.with_borrow_mut(|w| *w = Some(Wheel { id, entries: Slab::new(), next: None, sweeper: None }));
    sweeper()
}

async fn sweeper() {
    let mut sleep = pin!(tokio::time::sleep(Duration::ZERO));
    let mut due = Vec::new();
    loop {
        poll_fn(|cx| {
            let next = WHEEL.with_borrow_mut(|w| {
                let w = w.as_mut()?;
                if !w.sweeper.as_ref().is_some_and(|s| s.will_wake(cx.waker())) {
                    w.sweeper = Some(cx.waker().clone());
                }
                w.next
            });
            let Some(at) = next else { return Poll::Pending };
            if sleep.deadline() != at {
                sleep.as_mut().reset(at);
            }
            sleep.as_mut().poll(cx)
        })
        .await;
        let now = Instant::now();
        WHEEL.with_borrow_mut(|w| w.as_mut().map(|w| w.sweep(now, &mut due)));
        due.drain(..).for_each(Waker::wake);
    }
}

/// A point in time to wait for: a future that completes at it (see the
/// module's notes for how late), and can be moved without a new sleep.
#[derive(Debug)]
pub struct Deadline {
    at: Instant,
    state: State,
}

#[derive(Debug)]
enum State {
    /// Not polled since made or reset.
    Unarmed,
    /// In the wheel of the worker `wheel`, at `key`.
    Armed {
        wheel: u32,
        key: usize,
    },
    Fired,
    /// Off a worker.
    Tokio(Pin<Box<Sleep>>),
}

/// The time ran out first.
#[derive(Debug)]
pub struct Elapsed;

impl Deadline {
    /// A deadline at `at`.
    pub fn at(at: Instant) -> Self {
        Self { at, state: State::Unarmed }
    }

    /// Moves the deadline to `at`, armed or not, fired or not.
    pub fn reset(&mut self, at: Instant) {
        self.at = at;
        match &mut self.state {
            State::Unarmed => {}
            State::Fired => self.state = State::Unarmed,
            State::Tokio(sleep) => sleep.as_mut().reset(at),
            State::Armed { wheel, key } => {
                let wake = with_wheel(*wheel, |w| {
                    let e = w.entries.get_mut(*key)?;
                    (e.at, e.fired) = (at, false);
                    w.plan(at)
                });
                if let Some(Some(waker)) = wake {
                    waker.wake();
                }
            }
        }
    }

    fn poll_armed(&mut self, cx: &Context<'_>) -> Poll<()> {
        let State::Armed { wheel, key } = self.state else { return Poll::Pending };
        let fired = with_wheel(wheel, |w| {
            let e = w.entries.get_mut(key)?;
            if e.fired {
                w.entries.remove(key);
                return Some(true);
            }
            if !e.waker.as_ref().is_some_and(|k| k.will_wake(cx.waker())) {
                e.waker = Some(cx.waker().clone());
            }
            Some(false)
        });
        match fired {
            Some(Some(false)) => Poll::Pending,
            Some(Some(true)) => {
                self.state = State::Fired;
                Poll::Ready(())
            }
            // Moved off its worker, which cannot happen on a worker's
            // current-thread runtime: tokio's timer from here on.
            _ => {
                self.state = State::Tokio(Box::pin(tokio::time::sleep_until(self.at)));
                Poll::Pending
            }
        }
    }
}

/// Runs `f` on this thread's wheel if it is the wheel `id`.
fn with_wheel<T>(id: u32, f: impl FnOnce(&mut Wheel) -> T) -> Option<T> {
    WHEEL.try_with(|w| w.borrow_mut().as_mut().filter(|w| w.id == id).map(f)).ok().flatten()
}

impl Future for Deadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Fired => return Poll::Ready(()),
                State::Tokio(sleep) => return sleep.as_mut().poll(cx),
                State::Armed { .. } => match this.poll_armed(cx) {
                    Poll::Pending if matches!(this.state, State::Tokio(_)) => continue,
                    polled => return polled,
                },
                State::Unarmed => {
                    let at = this.at;
                    let armed = WHEEL
                        .try_with(|w| {
                            let mut w = w.borrow_mut();
                            let w = w.as_mut()?;
                            let entry = Entry { at, waker: Some(cx.waker().clone()), fired: false };
                            let key = w.entries.insert(entry);
                            Some((w.id, key, w.plan(at)))
                        })
                        .ok()
                        .flatten();
                    let Some((wheel, key, wake)) = armed else {
                        this.state = State::Tokio(Box::pin(tokio::time::sleep_until(at)));
                        continue;
                    };
                    this.state = State::Armed { wheel, key };
                    if let Some(waker) = wake {
                        waker.wake();
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        if let State::Armed { wheel, key } = self.state {
            with_wheel(wheel, |w| w.entries.try_remove(key));
        }
    }
}

/// `fut`'s output, or [`Elapsed`] if `at` comes first.
pub async fn within<F: Future>(at: Instant, fut: F) -> Result<F::Output, Elapsed> {
    let mut fut = pin!(fut);
    let mut deadline = Deadline::at(at);
    poll_fn(|cx| match fut.as_mut().poll(cx) {
        Poll::Ready(out) => Poll::Ready(Ok(out)),
        Poll::Pending => Pin::new(&mut deadline).poll(cx).map(|()| Err(Elapsed)),
    })
    .await
}

/// hyper's timer on a worker: its sleeps are [`Deadline`]s.
#[derive(Clone, Copy, Debug, Default)]
pub struct WorkerTimer;

impl hyper::rt::Sleep for Deadline {}

impl hyper::rt::Timer for WorkerTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Deadline::at(Instant::now() + duration))
    }

    fn sleep_until(&self, at: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Deadline::at(at.into()))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, at: std::time::Instant) {
        match sleep.as_mut().downcast_mut_pin::<Deadline>() {
            Some(deadline) => deadline.get_mut().reset(at.into()),
            None => *sleep = self.sleep_until(at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls `d` once, as a task that is never woken.
    fn poll_once(d: &mut Deadline) -> Poll<()> {
        Pin::new(d).poll(&mut Context::from_waker(Waker::noop()))
    }

    fn armed() -> usize {
        WHEEL.with_borrow(|w| w.as_ref().map_or(0, |w| w.entries.len()))
    }

    fn on_a_worker() {
        tokio::spawn(install());
    }

    /// `f`, failing (not hanging) if a deadline never fires: time is paused,
    /// so tokio jumps to this hour's end once nothing else is pending.
    async fn bounded<T>(f: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(3600), f).await.expect("a deadline never fired")
    }

    #[tokio::test(start_paused = true)]
    async fn fires_at_its_instant_and_within_the_slack() {
        on_a_worker();
        let start = Instant::now();
        for ms in [1, 40, 1000, 30_000] {
            let at = start + Duration::from_millis(ms);
            bounded(Deadline::at(at)).await;
            let late = Instant::now() - at;
            assert!(Instant::now() >= at, "{ms} ms fired early");
            assert!(late <= SLACK + Duration::from_millis(1), "{ms} ms fired {late:?} late");
        }
        assert_eq!(armed(), 0, "a fired deadline leaves no slot behind");
    }

    #[tokio::test(start_paused = true)]
    async fn many_deadlines_each_fire_in_order() {
        on_a_worker();
        let start = Instant::now();
        let tasks: Vec<_> = (1..=50u64)
            .map(|i| {
                tokio::spawn(async move {
                    let at = start + Duration::from_millis(i * 7);
                    bounded(Deadline::at(at)).await;
                    (at, Instant::now())
                })
            })
            .collect();
        for t in tasks {
            let (at, fired) = t.await.unwrap();
            assert!(fired >= at && fired - at <= SLACK + Duration::from_millis(1), "{at:?} fired at {fired:?}");
        }
        assert_eq!(armed(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_deadline_frees_its_slot() {
        on_a_worker();
        let mut ds: Vec<_> = (0..10).map(|_| Deadline::at(Instant::now() + Duration::from_secs(5))).collect();
        for d in &mut ds {
            assert!(poll_once(d).is_pending());
        }
        assert_eq!(armed(), 10);
        drop(ds);
        assert_eq!(armed(), 0);
        // The sweeper, planned for 5 s, finds nothing and parks.
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(WHEEL.with_borrow(|w| w.as_ref().unwrap().next.is_none()));
    }

    #[tokio::test(start_paused = true)]
    async fn reset_moves_an_armed_deadline_sooner_and_later() {
        on_a_worker();
        let start = Instant::now();
        let mut d = Deadline::at(start + Duration::from_secs(60));
        assert!(poll_once(&mut d).is_pending());
        // Sooner: the sweeper, planned for 60 s, must look at 50 ms.
        d.reset(start + Duration::from_millis(50));
        bounded(&mut d).await;
        assert!(Instant::now() - start < Duration::from_millis(50) + SLACK + Duration::from_millis(1));

        // A fired deadline reset later waits again.
        let again = Instant::now() + Duration::from_secs(2);
        d.reset(again);
        assert!(poll_once(&mut d).is_pending());
        d.reset(again + Duration::from_secs(1));
        bounded(&mut d).await;
        assert!(Instant::now() >= again + Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn off_a_worker_a_deadline_is_tokios_sleep() {
        let at = Instant::now() + Duration::from_millis(30);
        let mut d = Deadline::at(at);
        assert!(poll_once(&mut d).is_pending());
        assert!(matches!(d.state, State::Tokio(_)));
        d.await;
        assert_eq!(Instant::now(), at);
    }

    #[tokio::test(start_paused = true)]
    async fn within_gives_the_output_or_elapsed() {
        on_a_worker();
        let soon = Instant::now() + Duration::from_millis(10);
        assert!(bounded(within(soon, std::future::pending::<()>())).await.is_err());
        let later = Instant::now() + Duration::from_secs(1);
        assert_eq!(within(later, async { 7 }).await.ok(), Some(7));
        assert_eq!(armed(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn hyper_resets_the_same_deadline() {
        use hyper::rt::Timer as _;
        on_a_worker();
        let start = std::time::Instant::now();
        let mut sleep = WorkerTimer.sleep_until(start + Duration::from_secs(60));
        assert!(sleep.as_mut().poll(&mut Context::from_waker(Waker::noop())).is_pending());
        WorkerTimer.reset(&mut sleep, start + Duration::from_millis(20));
        assert_eq!(armed(), 1, "moved in place, not armed again");
        bounded(sleep).await;
        assert_eq!(armed(), 0);
    }
}
